"""The durable record of eval parts: one JSON file per (step or final, dataset), written
atomically on every change, read back in full when a controller starts."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.layout import RunDir, read_json_or_none

Key = tuple[int | None, str]  # (step, dataset); step None is the final full eval


class PartStatus(StrEnum):
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class LedgerEntry:
    step: int | None  # None: the final full eval (eval_step holds the checkpoint's step)
    dataset: str
    eval_step: int
    status: PartStatus
    attempt: int
    backend: str
    job_id: str
    submitted_at: float
    finished_at: float | None = None
    reason: str | None = None

    @property
    def key(self) -> Key:
        return (self.step, self.dataset)

    def finished(self, status: PartStatus, reason: str | None = None) -> LedgerEntry:
        return replace(self, status=status, finished_at=time.time(), reason=reason)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"status": str(self.status)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> LedgerEntry:
        return cls(**(value | {"status": PartStatus(value["status"])}))


class Ledger:
    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self.entries: dict[Key, LedgerEntry] = {}
        self._by_job: dict[str, Key] = {}
        self._load()

    def _load(self) -> None:
        root = self.rundir.ledger_dir
        if not root.is_dir():
            return
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.json")):
                value = read_json_or_none(path)
                if value is not None:
                    entry = LedgerEntry.from_json(value)
                    self.entries[entry.key] = entry
                    self._by_job[entry.job_id] = entry.key

    def put(self, entry: LedgerEntry) -> None:
        atomic_write_json(self.rundir.ledger(entry.step, entry.dataset), entry.to_json())
        self.entries[entry.key] = entry
        self._by_job[entry.job_id] = entry.key

    def get(self, key: Key) -> LedgerEntry | None:
        return self.entries.get(key)

    def by_job(self, job_id: str) -> LedgerEntry | None:
        key = self._by_job.get(job_id)
        entry = self.entries.get(key) if key is not None else None
        return entry if entry is not None and entry.status is PartStatus.SUBMITTED else None

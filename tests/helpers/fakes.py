"""Scripted stand-ins for an eval backend and a training handle, for controller tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalPart
from orchestrator.core.controller import TrainingState, TrainingStatus
from orchestrator.eval_backends.base import Failed, Outcome, Succeeded

JOB_IDS = itertools.count()


@dataclass
class FakeBackend:
    """Scripted: each submitted job finishes on the next poll; `fail` lists (step, dataset,
    attempt) triples that fail. A successful job writes a result like the real worker."""

    fail: set[tuple[int | None, str, int]] = field(default_factory=set)
    accuracy: dict[int, float] = field(default_factory=dict)
    name: str = "fake"
    submitted: list[EvalPart] = field(default_factory=list)
    _pending: dict[str, EvalPart] = field(default_factory=dict)

    def submit(self, job: EvalPart, log_path: Path) -> str:
        job_id = f"job{next(JOB_IDS)}"  # unique across backends, like Ray task ids
        self.submitted.append(job)
        self._pending[job_id] = job
        return job_id

    def poll(self) -> dict[str, Outcome]:
        out = {job_id: self.poll_one(job) for job_id, job in self._pending.items()}
        self._pending.clear()
        return out

    def poll_one(self, job: EvalPart) -> Outcome:
        if (job.step if job.partial else None, job.dataset, job.attempt) in self.fail:
            return Failed("scripted failure")
        acc = self.accuracy.get(job.step, 0.5)
        n = 100 if job.partial else 200
        atomic_write_json(
            Path(job.out),
            {
                "schema": 1,
                "step": job.step,
                "dataset": job.dataset,
                "partial": job.partial,
                "n": n,
                "correct": round(acc * n),
                "metrics": {"loss": 1 - acc, "accuracy": acc},
            },
        )
        return Succeeded(Path(job.out))

    def running(self) -> set[str]:
        return set(self._pending)

    def cancel(self, job_id: str) -> None:
        self._pending.pop(job_id, None)

    def close(self) -> None:
        pass


@dataclass
class FakeTraining:
    state: TrainingState = TrainingState.RUNNING

    def status(self) -> TrainingStatus:
        return TrainingStatus(self.state)

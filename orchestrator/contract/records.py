"""Typed result records, one schema version: what an eval part writes, what a merged step and
the final eval hold. Every record reads back from its JSON, including the records of runs
written before the metric registry (schema 1: loss and accuracy, plus "correct" counts).

Part:        eval/step_000500/<dataset>.json  {"schema", "step", "dataset", "kind", "partial",
             "eval_ratio", "n", "metrics": {name: value}, "stderr": {name: value},
             "breakdowns", "samples", provenance ...}
Merged step: eval/step_000500.json            {"schema", "step", "partial",
             "datasets": {name: block}, "overall": block, "missing": {name: reason}, "tasks"}
             block = {"n": n, <metric>: value, ..., "stderr": {<metric>: value}}
Final eval:  eval/final.json                  a merged step of the best checkpoint, partial false
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
LMMS_KIND = "lmms"  # the kind of an lmms-eval task's part (its results are under "tasks")
_NOT_METRICS = frozenset({"n", "correct", "stderr", "n_by_metric"})


@dataclass(frozen=True)
class Scores:
    """The metric values of one dataset (or of ``overall``) over ``n`` samples."""

    n: int
    values: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    n_by_metric: dict[str, int] = field(default_factory=dict)  # overall: who reported what

    def value(self, metric: str) -> float | None:
        v = self.values.get(metric)
        return None if v is None or math.isnan(v) else v

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, **self.values, "stderr": dict(self.stderr)}
        if self.n_by_metric:
            out["n_by_metric"] = dict(self.n_by_metric)
        return out

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> Scores:
        """A merged block (schema 1 or 2)."""
        values = {
            k: float(v)
            for k, v in block.items()
            if k not in _NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        return cls(
            n=int(block["n"]),
            values=values,
            stderr={k: float(v) for k, v in (block.get("stderr") or {}).items()},
            n_by_metric={k: int(v) for k, v in (block.get("n_by_metric") or {}).items()},
        )


@dataclass(frozen=True)
class PartRecord:
    """One eval part's result."""

    step: int
    dataset: str
    kind: str
    partial: bool
    scores: Scores
    raw: dict[str, Any]  # the whole file, breakdowns, samples and provenance included

    @classmethod
    def from_json(cls, value: Mapping[str, Any], dataset: str | None = None) -> PartRecord:
        """A part file (schema 1 or 2); ``dataset`` names it where the file does not."""
        metrics = value["metrics"]
        scores = Scores(
            n=int(value["n"]),
            # schema 1 kept breakdowns (per_class_accuracy) among the metrics
            values={
                k: float(v)
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            stderr={k: float(v) for k, v in (value.get("stderr") or {}).items()},
        )
        return cls(
            step=int(value["step"]),
            dataset=str(value.get("dataset", dataset)),
            kind=str(value.get("kind", "classification")),
            partial=bool(value.get("partial", True)),
            scores=scores,
            raw=dict(value),
        )


@dataclass(frozen=True)
class MergedStep:
    """The parts of one step merged (also the final eval, with ``partial`` false)."""

    step: int
    partial: bool
    datasets: dict[str, Scores]
    overall: Scores
    missing: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)  # lmms-eval task results (run or imported)

    def scope(self, name: str) -> Scores | None:
        """``overall``, a dataset, or ``tasks/<task>`` (an lmms-eval task's metrics)."""
        if name.startswith("tasks/"):
            task = self.tasks.get(name[len("tasks/") :])
            if task is None:
                return None
            values = {k: float(v) for k, v in task["metrics"].items()}
            stderr = {k: float(v) for k, v in (task.get("stderr") or {}).items()}
            return Scores(int(task.get("n") or 0), values, stderr)
        return self.overall if name == "overall" else self.datasets.get(name)

    def value(self, scope: str, metric: str) -> float | None:
        block = self.scope(scope)
        return None if block is None else block.value(metric)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "step": self.step,
            "partial": self.partial,
            "datasets": {n: s.to_json() for n, s in sorted(self.datasets.items())},
            "overall": self.overall.to_json(),
            "missing": dict(self.missing),
        }
        if self.tasks:
            out["tasks"] = self.tasks
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> MergedStep:
        return cls(
            step=int(value["step"]),
            partial=bool(value["partial"]),
            datasets={n: Scores.from_block(b) for n, b in value["datasets"].items()},
            overall=Scores.from_block(value["overall"]),
            missing=dict(value.get("missing") or {}),
            tasks=dict(value.get("tasks") or {}),
        )


@dataclass(frozen=True)
class BestRecord:
    """best.json: the best checkpoint so far by ``best.metric``."""

    step: int
    metric: str
    value: float
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "metric": self.metric, "value": self.value, "mode": self.mode}

"""Result schema, merging and best-checkpoint choice: pure functions over values.

A *part* is what one eval job writes for one (step, dataset). A *merged step* combines the parts
of one step; the overall loss is the n-weighted mean of the dataset losses and the overall
accuracy is total correct over total n (each evaluated sample counts once).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Best:
    step: int
    metric: str
    value: float
    mode: Literal["max", "min"]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "metric": self.metric, "value": self.value, "mode": self.mode}


def merge_parts(
    step: int,
    parts: Mapping[str, Mapping[str, Any]],
    expected: Iterable[str],
    *,
    partial: bool,
    failed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge the result parts of one step into one record (inputs are not modified).

    ``expected`` lists every dataset that should have a part; the ones without a part are listed
    under ``missing`` (with the failure reason when one is known) rather than silently dropped.
    """
    datasets: dict[str, dict[str, Any]] = {}
    for name in sorted(parts):
        part = parts[name]
        if part.get("step") != step:
            raise ValueError(f"part {name} is for step {part.get('step')}, not {step}")
        m = part["metrics"]
        datasets[name] = {
            "loss": float(m["loss"]),
            "accuracy": float(m["accuracy"]),
            "n": int(part["n"]),
            "correct": int(part["correct"]),
        }
    missing = {n: (failed or {}).get(n, "no result") for n in expected if n not in parts}
    return {
        "schema": SCHEMA_VERSION,
        "step": step,
        "partial": partial,
        "datasets": datasets,
        "overall": overall(datasets.values()),
        "missing": missing,
    }


def overall(datasets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(datasets)
    n = sum(int(r["n"]) for r in rows)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan, "n": 0, "correct": 0}
    correct = sum(int(r["correct"]) for r in rows)
    loss = sum(float(r["loss"]) * int(r["n"]) for r in rows) / n
    return {"loss": loss, "accuracy": correct / n, "n": n, "correct": correct}


def metric_value(merged: Mapping[str, Any], metric: str) -> float | None:
    """Look up ``overall_accuracy`` or ``<dataset>_loss`` in a merged record (None if absent)."""
    scope, _, name = metric.rpartition("_")
    block = merged["overall"] if scope == "overall" else merged["datasets"].get(scope)
    if block is None or name not in block:
        return None
    value = float(block[name])
    return None if math.isnan(value) else value


def choose_best(
    merged_steps: Iterable[Mapping[str, Any]], metric: str, mode: Literal["max", "min"]
) -> Best | None:
    """The step with the best metric; on a tie the earlier step wins. Incomplete steps
    (with missing datasets) are not eligible, since their overall numbers cover less data."""
    best: Best | None = None
    for rec in sorted(merged_steps, key=lambda r: int(r["step"])):
        if rec.get("missing"):
            continue
        value = metric_value(rec, metric)
        if value is None:
            continue
        better = best is None or (value > best.value if mode == "max" else value < best.value)
        if better:
            best = Best(step=int(rec["step"]), metric=metric, value=value, mode=mode)
    return best


def flat_metrics(merged: Mapping[str, Any]) -> dict[str, float]:
    """Tracker keys for a merged record: overall/accuracy, digits/loss, digits/n, ..."""
    out: dict[str, float] = {}
    for scope, block in [("overall", merged["overall"]), *merged["datasets"].items()]:
        for key in ("loss", "accuracy", "n"):
            value = block.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out[f"{scope}/{key}"] = float(value)
    return out

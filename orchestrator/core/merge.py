"""Merging eval parts and choosing the best checkpoint: pure functions over values.

A *part* is what one eval job writes for one (step, dataset). A *merged step* combines the parts
of one step: every metric a part reports is kept per dataset, and ``overall`` holds each metric
combined over the datasets that report it, weighted by their sample counts (each evaluated
sample counts once). Nothing here names a metric: they come from the parts (and the registry,
through the spec, for the direction of ``best.metric``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from orchestrator.contract.metrics import MetricValue, combine
from orchestrator.contract.records import LMMS_KIND, BestRecord, MergedStep, PartRecord, Scores

Best = BestRecord


def merge_parts(
    step: int,
    parts: Mapping[str, Mapping[str, Any]],
    expected: Iterable[str],
    *,
    partial: bool,
    failed: Mapping[str, str] | None = None,
    metrics: Iterable[str] = (),
) -> dict[str, Any]:
    """Merge the result parts of one step into one record (inputs are not modified).

    ``expected`` lists every dataset that should have a part; the ones without a part are listed
    under ``missing`` (with the failure reason when one is known) rather than silently dropped.
    ``metrics`` (the spec's declared metrics) are in ``overall`` even when no part reported
    them (as NaN: a metric over nothing is undefined, never 0).
    """
    datasets: dict[str, Scores] = {}
    tasks: dict[str, Any] = {}
    for name in sorted(parts):
        part = PartRecord.from_json(parts[name], name)
        if part.step != step:
            raise ValueError(f"part {name} is for step {part.step}, not {step}")
        if part.kind == LMMS_KIND:  # an lmms-eval task: its (sub)tasks, outside ``overall``
            for task, block in part.raw["tasks"].items():
                tasks[task] = {**block, "source": "lmms-eval", "part": name}
        else:
            datasets[name] = part.scores
    missing = {n: (failed or {}).get(n, "no result") for n in expected if n not in parts}
    merged = MergedStep(
        step, partial, datasets, overall(datasets.values(), metrics), missing, tasks
    )
    return merged.to_json()


def overall(datasets: Iterable[Scores], metrics: Iterable[str] = ()) -> Scores:
    """Each metric over the datasets that report it, weighted by their sample counts."""
    rows = list(datasets)
    names: dict[str, None] = dict.fromkeys(metrics)
    for r in rows:
        names.update(dict.fromkeys(r.values))
    values: dict[str, float] = {}
    stderr: dict[str, float] = {}
    counts: dict[str, int] = {}
    for m in names:
        c = combine(
            MetricValue(r.values[m], r.stderr.get(m, math.nan), r.n) for r in rows if m in r.values
        )
        values[m], stderr[m], counts[m] = c.value, c.stderr, c.n
    return Scores(sum(r.n for r in rows), values, stderr, counts)


def choose_best(
    merged_steps: Iterable[Mapping[str, Any]],
    scope: str,
    metric: str,
    mode: Literal["max", "min"],
    name: str | None = None,
) -> Best | None:
    """The step with the best ``scope``'s ``metric``; on a tie the earlier step wins. Incomplete
    steps (with missing datasets) are not eligible, since their overall numbers cover less data.
    ``name`` is how best.metric spells it (default ``<scope>_<metric>``)."""
    best: Best | None = None
    for rec in sorted(merged_steps, key=lambda r: int(r["step"])):
        if rec.get("missing"):
            continue
        value = MergedStep.from_json(rec).value(scope, metric)
        if value is None:
            continue
        better = best is None or (value > best.value if mode == "max" else value < best.value)
        if better:
            best = Best(int(rec["step"]), name or f"{scope}_{metric}", value, mode)
    return best


def flat_metrics(merged: Mapping[str, Any]) -> dict[str, float]:
    """Tracker keys for a merged record: overall/accuracy, digits/loss, digits/n, ... for every
    metric the record holds."""
    rec = MergedStep.from_json(merged)
    out: dict[str, float] = {}
    for scope, block in [("overall", rec.overall), *rec.datasets.items()]:
        for key, value in block.values.items():
            if not math.isnan(value):
                out[f"{scope}/{key}"] = value
        out[f"{scope}/n"] = float(block.n)
    for task, entry in rec.tasks.items():
        for key, value in entry["metrics"].items():
            if not math.isnan(value):
                out[f"tasks/{task}/{key}"] = float(value)
        if entry.get("n") is not None:
            out[f"tasks/{task}/n"] = float(entry["n"])
    return out

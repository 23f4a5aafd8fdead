"""lmms-eval's results, read: what ``simple_evaluate`` returns and its ``*_results.json`` hold,
as orch's task records. Shared by the eval parts that run lmms-eval (workers.lmms) and by
``orch import-lmms`` (orchestrator.core.lmms_import).

lmms-eval writes ``{"results": {TASK: {"alias": ..., "METRIC,FILTER": value,
"METRIC_stderr,FILTER": value | "N/A", "METRIC_stderr_clt,FILTER": ...}}, "n-samples": {TASK:
{"original": n, "effective": n}}, ...}``.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.contract.errors import DataError

_TASK_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def tasks_of(raw: Any) -> dict[str, dict[str, Any]]:
    """``parse_results`` of an lmms-eval results object (what ``simple_evaluate`` returns)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("results"), dict):
        raise DataError("expected an lmms-eval results file with a 'results' object")
    samples = raw.get("n-samples", {})
    tasks: dict[str, dict[str, Any]] = {}
    for task, block in raw["results"].items():
        metrics, stderr, variants = metric_values(block)
        if not metrics:
            raise DataError(f"task {task!r} has no numeric metrics")
        n = samples.get(task, {}).get("effective")
        tasks[_TASK_NAME.sub("_", task)] = {
            "metrics": metrics,
            "stderr": stderr,
            **({"stderr_variants": variants} if variants else {}),
            "n": int(n) if n is not None else None,
        }
    if not tasks:
        raise DataError("no tasks under 'results'")
    return tasks


# METRIC_stderr is the metric's standard error; METRIC_stderr_<variant> (clt, clustered, ...)
# are other estimates of it, never metrics of their own.
_STDERR = re.compile(r"^(?P<metric>.+?)_stderr(?:_(?P<variant>[A-Za-z0-9]+))?$")


def metric_values(
    block: dict[str, Any],
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    """One task's "METRIC,FILTER" entries as (metrics, stderr, stderr variants), keyed by
    METRIC, or METRIC/FILTER for a filter other than "none"."""
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    variants: dict[str, dict[str, float]] = {}
    for key, value in block.items():
        if key == "alias" or "," not in key:
            continue
        name, _, filt = key.partition(",")
        err = _STDERR.match(name)
        base = err["metric"] if err else name
        label = base if filt in ("none", "") else f"{base}/{filt}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # "N/A" stderrs and non-numeric extras
        if err is None:
            metrics[label] = float(value)
        elif err["variant"] is None:
            stderr[label] = float(value)
        else:
            variants.setdefault(label, {})[err["variant"]] = float(value)
    return metrics, stderr, variants

"""lmms-eval interoperability: its ``*_results.json`` become eval parts of a step.

lmms-eval writes ``{"results": {TASK: {"alias": ..., "METRIC,FILTER": value,
"METRIC_stderr,FILTER": value | "N/A"}}, "n-samples": {TASK: {"original": n, "effective": n}},
"higher_is_better": {TASK: {METRIC: bool}}, "config": {...}, ...}``. Each task becomes one part
under ``eval/imports/step_N/<task>.json`` (inputs are never modified or deleted); the
controller, or ``orch import-lmms`` when no controller runs, folds them into the merged step
file's ``tasks`` block and publishes them on the same wandb eval axis as orch's own results.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import DataError
from orchestrator.contract.layout import RunDir, read_json_or_none
from orchestrator.contract.lmms import tasks_of
from orchestrator.contract.records import SCHEMA_VERSION

_TASK_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def parse_results(path: Path) -> dict[str, dict[str, Any]]:
    """Task -> {"metrics": {name: value}, "stderr": {name: value}, "n": int | None}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable lmms-eval results file ({e})") from e
    try:
        return tasks_of(raw)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def import_results(rundir: RunDir, step: int, path: Path) -> list[Path]:
    """Write one part per task of ``path`` for ``step``; return the part files."""
    if step not in rundir.complete_checkpoints():
        raise DataError(
            f"--step {step}: run {rundir.name} has no complete checkpoint at that step "
            f"(have {sorted(rundir.complete_checkpoints()) or 'none'})"
        )
    written = []
    for task, value in parse_results(path).items():
        out = imports_dir(rundir) / f"step_{step:06d}" / f"{task}.json"
        atomic_write_json(
            out,
            {
                "schema": SCHEMA_VERSION,
                "step": step,
                "task": task,
                "source": "lmms-eval",
                "source_file": str(path.resolve()),
                **value,
            },
        )
        written.append(out)
    return written


def imports_dir(rundir: RunDir) -> Path:
    return rundir.imports


def pending_imports(rundir: RunDir, done: set[str]) -> dict[int, list[Path]]:
    """Imported parts not yet folded into their merged step, by step."""
    out: dict[int, list[Path]] = {}
    for part in sorted(imports_dir(rundir).glob("step_*/*.json")):
        key = f"{part.parent.name}/{part.name}"
        if key not in done:
            out.setdefault(int(part.parent.name[5:]), []).append(part)
    return out


def fold_into(merged: dict[str, Any], parts: list[Path]) -> dict[str, float]:
    """Add task parts to a merged step record (in place); return the tracker keys to log."""
    tasks = merged.setdefault("tasks", {})
    flat: dict[str, float] = {}
    for path in parts:
        part = read_json_or_none(path)
        assert part is not None
        tasks[part["task"]] = {
            k: part[k] for k in ("metrics", "stderr", "stderr_variants", "n", "source") if k in part
        }
        for name, value in part["metrics"].items():
            if not math.isnan(value):
                flat[f"tasks/{part['task']}/{name}"] = value
    return flat

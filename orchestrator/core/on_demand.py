"""`orch eval RUN --step N|best [--full] [--datasets a,b]`: evaluate one checkpoint on demand.

Parts run through the same backends and worker as the controller's, and land under
``eval/ondemand/step_000500-{partial,full}/`` with a merged file beside them. The tracker is
not touched: the controller stays the only writer of the wandb run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import RunDirError
from orchestrator.contract.layout import RunDir, read_json_or_none
from orchestrator.contract.spec import JobSpec
from orchestrator.core.controller import build_eval_job
from orchestrator.core.merge import merge_parts
from orchestrator.eval_backends.base import EvalBackend, Succeeded

logger = logging.getLogger("orch.eval")


def resolve_step(rundir: RunDir, step: str) -> int:
    complete = rundir.complete_checkpoints()
    if step == "best":
        best = read_json_or_none(rundir.best)
        if best is None:
            raise RunDirError(f"{rundir.best}: no best checkpoint yet; pass --step N")
        return int(best["step"])
    if step == "latest":
        if not complete:
            raise RunDirError(f"{rundir.checkpoints}: no complete checkpoint")
        return max(complete)
    if not step.isdigit() or int(step) not in complete:
        raise RunDirError(
            f"--step {step}: no complete checkpoint; have {sorted(complete) or 'none'}, "
            "or use best / latest"
        )
    return int(step)


def evaluate_on_demand(
    spec: JobSpec,
    rundir: RunDir,
    backend: EvalBackend,
    step: int,
    datasets: list[str],
    full: bool,
) -> dict[str, Any]:
    unknown = sorted(set(datasets) - set(spec.part_names))
    if unknown:
        raise RunDirError(f"--datasets: unknown {unknown}; the run has {sorted(spec.datasets)}")
    if not datasets:
        raise RunDirError("nothing to evaluate: give --datasets or --lmms-tasks")
    folder = rundir.ondemand(step, full)
    jobs: dict[str, str] = {}
    for name in datasets:
        job = build_eval_job(
            spec, rundir, step, name, full=full, out=folder / f"{name}.json", backend=backend.name
        )
        log = rundir.logs / "eval" / "ondemand" / f"{folder.name}-{name}.log"
        jobs[backend.submit(job, log)] = name
    parts: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    while jobs:
        for job_id, outcome in backend.poll().items():
            name = jobs.pop(job_id)
            if isinstance(outcome, Succeeded):
                value = read_json_or_none(outcome.result)
                assert value is not None
                parts[name] = value
            else:
                failed[name] = getattr(outcome, "reason", type(outcome).__name__)
                logger.error("eval of %s failed: %s", name, failed[name])
        time.sleep(0.2)
    merged = merge_parts(
        step, parts, datasets, partial=not full, failed=failed, metrics=spec.all_metrics()
    )
    atomic_write_json(folder.with_suffix(".json"), merged)
    logger.info("wrote %s", folder.with_suffix(".json"))
    return merged

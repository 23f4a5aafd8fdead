"""Checkpoint retention: which checkpoints keep their DeepSpeed state, which keep only their HF
weights, which go. A pure plan from the controller's snapshot, then removals that a crash at any
point leaves safe (orchestrator/contract/checkpoint.py says how).

``training.keep_last = K``: the last K checkpoints keep their DeepSpeed state (resumable); older
ones keep their HF weights only. ``training.keep_weights = M``: the last M checkpoints keep their
HF weights; older ones are removed whole. Whatever the settings, these are never removed:

- the latest checkpoint's state: it is where training resumes (a worker-group restart, a
  requeue, ``orch resume``);
- the weights of the best checkpoint (the final full eval and the export read them);
- the weights of a checkpoint whose eval parts have not all ended (the step is not merged yet).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.layout import RunDir, append_jsonl
from orchestrator.diskuse import disk_bytes, human_bytes

logger = logging.getLogger("orch.retention")


@dataclass(frozen=True)
class RetentionPlan:
    remove_state: tuple[int, ...]  # steps that keep their HF weights only
    remove_whole: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.remove_state or self.remove_whole)


def plan_retention(
    complete: Sequence[int],
    resumable: set[int],
    *,
    keep_last: int | None,
    keep_weights: int | None,
    protected: set[int],
) -> RetentionPlan:
    """What to remove now. ``complete``: the complete checkpoints' steps; ``resumable``: those
    whose state is still there; ``protected``: steps whose weights must stay (best, evals not
    ended). None keeps everything of that kind."""
    steps = sorted(complete)
    if not steps:
        return RetentionPlan((), ())
    keep_state = set(steps[-keep_last:]) if keep_last else set(steps)
    keep_state.add(steps[-1])  # the resume point
    keep_any = set(steps[-keep_weights:]) if keep_weights else set(steps)
    keep_any |= keep_state | (protected & set(steps))
    return RetentionPlan(
        remove_state=tuple(s for s in steps if s in keep_any - keep_state and s in resumable),
        remove_whole=tuple(s for s in steps if s not in keep_any),
    )


def apply_retention(rundir: RunDir, plan: RetentionPlan, why: str) -> None:
    """Carry out ``plan``; each removal is recorded in logs/retention.jsonl before it starts (a
    crash may leave a record of a removal that the next controller finishes, never a removal
    without a record), and logged."""
    for step in plan.remove_state:
        path = ckpt.checkpoint_dir(rundir.checkpoints, step)
        size = disk_bytes(path / ckpt.DEEPSPEED_TAG)
        _record(rundir, step, "state", size)
        ckpt.remove_state(path)
        logger.info(
            "retention: removed the DeepSpeed state of step %d (%s), keeping its HF weights (%s)",
            step, human_bytes(size), why,
        )  # fmt: skip
    for step in plan.remove_whole:
        path = ckpt.checkpoint_dir(rundir.checkpoints, step)
        size = disk_bytes(path)
        _record(rundir, step, "checkpoint", size)
        ckpt.remove_checkpoint(path)
        logger.info("retention: removed checkpoint %d (%s; %s)", step, human_bytes(size), why)


def _record(rundir: RunDir, step: int, removed: str, size: int) -> None:
    append_jsonl(rundir.retention_log, {"step": step, "removed": removed, "bytes": size})

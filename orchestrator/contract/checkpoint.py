"""The checkpoint format, owned by the writer (the train loop) and read by everyone else.

<checkpoints>/step_000500/
    deepspeed/          DeepSpeed engine state (weights, optimizer, scheduler) for resume
    hf/                 Hugging Face weights + classification head, for eval and export
    trainer_state.json  step, data position, metrics at save time
    COMPLETE            written last; a checkpoint exists only when this file exists
                        ({"step", "time", "hf_digest"}: the digest every eval result records)
    STATE_REMOVED       retention removed deepspeed/ (written before the removal starts): the
                        checkpoint keeps its HF weights (eval, export) but cannot be resumed

Retention (orchestrator/core/retention.py) removes in an order that a crash at any point leaves
safe: a checkpoint's state goes after STATE_REMOVED is written; a whole checkpoint is first
renamed to ``.removing-step_N`` (no checkpoint name), then deleted. Nothing half-removed is
ever taken for complete or resumable, and ``finish_removals`` completes what a crash
interrupted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

COMPLETE = "COMPLETE"
DEEPSPEED_TAG = "deepspeed"
HF_DIR = "hf"
TRAINER_STATE = "trainer_state.json"
STATE_REMOVED = "STATE_REMOVED"
REMOVING_PREFIX = ".removing-"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step_{step:06d}"


def step_of(path: Path) -> int | None:
    m = _STEP_DIR.match(path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(checkpoints: Path) -> dict[int, Path]:
    """Every checkpoint whose COMPLETE marker exists, by step."""
    if not checkpoints.is_dir():
        return {}
    out: dict[int, Path] = {}
    for d in checkpoints.iterdir():
        step = step_of(d)
        if step is not None and (d / COMPLETE).is_file():
            out[step] = d
    return dict(sorted(out.items()))


def latest_complete(checkpoints: Path) -> Path | None:
    found = complete_checkpoints(checkpoints)
    return found[max(found)] if found else None


def resumable(checkpoint: Path) -> bool:
    """A complete checkpoint whose DeepSpeed state is still there (retention did not remove
    it): training can continue from it."""
    return (checkpoint / COMPLETE).is_file() and not (checkpoint / STATE_REMOVED).exists()


def latest_resumable(checkpoints: Path) -> Path | None:
    found = [d for d in complete_checkpoints(checkpoints).values() if resumable(d)]
    return found[-1] if found else None


def remove_state(checkpoint: Path) -> None:
    """Remove the checkpoint's DeepSpeed state, keeping its HF weights. STATE_REMOVED first:
    a crash in the middle leaves a weights-only checkpoint, never a resumable half."""
    (checkpoint / STATE_REMOVED).write_text("")
    if (checkpoint / DEEPSPEED_TAG).exists():
        shutil.rmtree(checkpoint / DEEPSPEED_TAG)


def remove_checkpoint(checkpoint: Path) -> None:
    """Remove a whole checkpoint: renamed out of the checkpoint names first (one atomic step:
    from then on it is no checkpoint at all), then deleted."""
    doomed = checkpoint.with_name(REMOVING_PREFIX + checkpoint.name)
    checkpoint.rename(doomed)
    shutil.rmtree(doomed)


def finish_removals(checkpoints: Path) -> list[str]:
    """Complete the removals a crash interrupted; return what was finished."""
    if not checkpoints.is_dir():
        return []
    done = []
    for d in sorted(checkpoints.iterdir()):
        if d.name.startswith(REMOVING_PREFIX):
            shutil.rmtree(d)
            done.append(d.name)
        elif (
            step_of(d) is not None and (d / STATE_REMOVED).exists() and (d / DEEPSPEED_TAG).exists()
        ):
            shutil.rmtree(d / DEEPSPEED_TAG)
            done.append(f"{d.name}/{DEEPSPEED_TAG}")
    return done


def recorded_digest(checkpoint: Path) -> str | None:
    """The digest of the checkpoint's hf/ weights, computed once when it was saved (None for a
    checkpoint written before digests were recorded: the eval part then computes it)."""
    marker = checkpoint / COMPLETE
    if not marker.is_file():
        return None
    value = json.loads(marker.read_text() or "{}")
    digest = value.get("hf_digest") if isinstance(value, dict) else None
    return str(digest) if digest else None

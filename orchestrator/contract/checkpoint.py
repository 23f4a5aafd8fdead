"""The checkpoint format, owned by the writer (the train loop) and read by everyone else.

<checkpoints>/step_000500/
    deepspeed/          DeepSpeed engine state (weights, optimizer, scheduler) for resume
    hf/                 Hugging Face weights + classification head, for eval and export
    trainer_state.json  step, data position, metrics at save time
    COMPLETE            written last; a checkpoint exists only when this file exists
                        ({"step", "time", "hf_digest"}: the digest every eval result records)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

COMPLETE = "COMPLETE"
DEEPSPEED_TAG = "deepspeed"
HF_DIR = "hf"
TRAINER_STATE = "trainer_state.json"
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


def recorded_digest(checkpoint: Path) -> str | None:
    """The digest of the checkpoint's hf/ weights, computed once when it was saved (None for a
    checkpoint written before digests were recorded: the eval part then computes it)."""
    marker = checkpoint / COMPLETE
    if not marker.is_file():
        return None
    value = json.loads(marker.read_text() or "{}")
    digest = value.get("hf_digest") if isinstance(value, dict) else None
    return str(digest) if digest else None

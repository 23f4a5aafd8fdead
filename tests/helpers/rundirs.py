"""Run directories fabricated on disk, laid out as the real writers lay them out."""

from __future__ import annotations

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.layout import RunDir


def add_checkpoint(rundir: RunDir, step: int) -> None:
    """A complete checkpoint of ``step``: its hf/ directory and the COMPLETE marker."""
    d = ckpt.checkpoint_dir(rundir.checkpoints, step)
    (d / ckpt.HF_DIR).mkdir(parents=True)
    atomic_write_json(d / ckpt.COMPLETE, {"step": step})

"""Numerical safety: a non-finite loss or gradient norm never passes silently.

On every micro-batch the per-sample losses are checked (the flag is all-reduced so every rank
takes the same decision, as DeepSpeed's collectives require). A non-finite value writes a
forensics file, ``logs/forensics/step_000123-micro0-rank1.json``: the sample ids, datasets and
labels of the rank's batch with their losses, the per-dataset losses, the learning rate and the
checkpoint to resume from, so the cause is found in minutes. Then training stops (the default)
or, with ``training.on_nonfinite = "skip"``, the batch contributes no gradient and is counted;
past ``max_skipped`` it stops anyway.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from orchestrator.contract.atomic import atomic_write_json


class Samples(Protocol):
    """What the guard needs of a batch: per-sample ids, datasets and labels (-1: a VQA sample)."""

    @property
    def ids(self) -> list[str]: ...
    @property
    def datasets(self) -> list[str]: ...
    @property
    def labels(self) -> torch.Tensor: ...


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient norm; the message names the forensics."""


@dataclass
class Guard:
    forensics_dir: Path
    policy: str  # "stop" | "skip"
    max_skipped: int
    rank: int
    resume_from: Path | None = None
    skipped: int = 0
    # The largest per-module gradient norms, measured on the last log step: (step, norms).
    module_grad_norms: tuple[int, dict[str, float]] | None = None

    def check_losses(
        self,
        step: int,
        micro: int,
        batch: Samples,
        losses: torch.Tensor,
        lr: float,
        device: torch.device,
        preempt: bool = False,
    ) -> tuple[bool, bool]:
        """(skip this batch, preemption requested on any rank); raises NonFiniteError when
        training must stop. One all-reduce per micro-batch carries both flags, so every rank
        takes the same decisions without a second collective per step."""
        bad = (~torch.isfinite(losses.detach())).any().float()
        flags = torch.stack([bad, torch.tensor(float(preempt), device=device)])
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        any_bad, any_preempt = (bool(v > 0) for v in flags.tolist())
        if not any_bad:
            return False, any_preempt
        values = losses.detach().float().cpu().tolist()
        path = self.write(step, micro, batch, values, lr, "non-finite loss")
        if self.policy == "stop" or self.skipped >= self.max_skipped:
            raise NonFiniteError(
                f"non-finite loss at step {step} (micro-batch {micro}); forensics in "
                f"{path.parent}; the last clean checkpoint is {self.resume_from or 'none'}"
            )
        self.skipped += 1
        return True, any_preempt

    def _module_norms(self) -> dict[str, Any] | None:
        return _module_norms_json(self.module_grad_norms)

    def check_grad_norm(self, step: int, grad_norm: float | None, lr: float) -> None:
        if grad_norm is None or math.isfinite(grad_norm):
            return
        path = self.forensics_dir / f"step_{step:06d}-gradnorm-rank{self.rank}.json"
        record = {
            "step": step,
            "reason": "non-finite gradient norm",
            "grad_norm": str(grad_norm),
            "lr": lr,
            "resume_from": str(self.resume_from) if self.resume_from else None,
            "largest_module_grad_norms": self._module_norms(),
            "time": time.time(),
        }
        atomic_write_json(path, record)
        raise NonFiniteError(f"non-finite gradient norm at step {step}; forensics in {path}")

    def write(
        self,
        step: int,
        micro: int,
        batch: Samples,
        losses: list[float],
        lr: float,
        reason: str,
    ) -> Path:
        rows = zip(batch.ids, batch.datasets, batch.labels.tolist(), losses, strict=True)
        samples = [
            {"id": i, "dataset": d, "label": int(y), "loss": _num(loss)} for i, d, y, loss in rows
        ]
        per_dataset: dict[str, list[float]] = {}
        for d, loss in zip(batch.datasets, losses, strict=True):
            per_dataset.setdefault(d, []).append(loss)
        record: dict[str, Any] = {
            "step": step,
            "micro_step": micro,
            "rank": self.rank,
            "reason": reason,
            "non_finite_samples": [s["id"] for s in samples if not isinstance(s["loss"], float)],
            "samples": samples,
            "per_dataset_loss": {d: _num(sum(v) / len(v)) for d, v in per_dataset.items()},
            "lr": lr,
            "resume_from": str(self.resume_from) if self.resume_from else None,
            "largest_module_grad_norms": self._module_norms(),
            "time": time.time(),
        }
        path = self.forensics_dir / f"step_{step:06d}-micro{micro}-rank{self.rank}.json"
        atomic_write_json(path, record)
        return path


def _module_norms_json(value: tuple[int, dict[str, float]] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    step, norms = value
    return {"measured_at_step": step, "norms": {k: _num(v) for k, v in norms.items()}}


def _num(x: float) -> float | str:
    """JSON has no NaN or inf: non-finite values are written as strings ("nan", "inf")."""
    return x if math.isfinite(x) else str(x)

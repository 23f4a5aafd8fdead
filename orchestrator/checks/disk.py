"""Will the run's checkpoints fit? Estimated before any compute, from the model's parameter count
(read from its safetensors headers: no weights are loaded), the training dtype, the optimizer
and what retention keeps; refused, with the figures and the settings to change, when the run
directory's filesystem cannot hold the peak.

One checkpoint is its DeepSpeed state plus its HF weights (orchestrator/contract/checkpoint.py):

- DeepSpeed state: the module's weights (2 bytes a parameter in bf16, 4 in fp32) and AdamW's
  fp32 master weights and two moments (12 bytes a trainable parameter, partitioned across ranks
  by ZeRO but all on the shared filesystem); with LoRA only the adapters are trainable, and
  their optimizer state is neglected here;
- HF weights: the module's weights again, in the training dtype (LoRA: merged).

Measured on the tiny demo model (fp32, ZeRO-2, 2 ranks): 2.65 MB of state and 1.32 MB of HF
weights for 163 k parameters, against an estimate of 2.61 MB and 0.65 MB + the head.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from orchestrator.contract.errors import SpecError
from orchestrator.contract.spec import JobSpec


def model_parameters(model_dir: Path) -> int:
    """Parameters of the model in ``model_dir``, from the headers of its safetensors files."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SpecError(
            f"model.path: {model_dir} has no *.safetensors weights; orch reads the parameter "
            "count from their headers to size the checkpoints (save the model with "
            "save_pretrained(safe_serialization=True))"
        )
    total = 0
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        total += sum(math.prod(t["shape"]) for t in header.values())
    return total


@dataclass(frozen=True)
class CheckpointSize:
    params: int
    state_bytes: int
    hf_bytes: int
    checkpoints: int  # saved over the run
    kept_states: int  # at the peak
    kept_weights: int

    @property
    def peak_bytes(self) -> int:
        return self.kept_states * self.state_bytes + self.kept_weights * self.hf_bytes

    @property
    def one_bytes(self) -> int:
        return self.state_bytes + self.hf_bytes


def estimate(spec: JobSpec, params: int, max_steps: int) -> CheckpointSize:
    tr = spec.training
    weight = 2 if tr.bf16 else 4
    trainable = 0 if spec.model.lora is not None else params
    n = len(tr.checkpoint_steps(max_steps))
    # At the peak, a new checkpoint is written before retention removes an older one; the best
    # one's weights are kept beyond keep_weights.
    states = n if tr.keep_last is None else min(n, tr.keep_last + 1)
    weights = n if tr.keep_weights is None else min(n, tr.keep_weights + 2)
    return CheckpointSize(
        params=params,
        state_bytes=params * weight + trainable * 12,
        hf_bytes=params * weight,
        checkpoints=n,
        kept_states=max(states, 1),
        kept_weights=max(weights, states, 1),
    )


def existing_root(path: Path) -> Path:
    """``path`` or its nearest existing parent (the run directory may not exist yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_disk(spec: JobSpec, max_steps: int, run_path: Path) -> CheckpointSize:
    """Raise SpecError when the filesystem of ``run_path`` cannot hold the run's checkpoints at
    their peak (what the run directory already holds is counted as available)."""
    from orchestrator.diskuse import disk_bytes, human_bytes

    size = estimate(spec, model_parameters(spec.model.path), max_steps)
    root = existing_root(run_path)
    free = shutil.disk_usage(root).free
    have = disk_bytes(run_path / "checkpoints") if run_path.is_dir() else 0
    if size.peak_bytes <= free + have:
        return size
    tr = spec.training
    frugal = estimate(
        spec.model_copy(
            update={"training": tr.model_copy(update={"keep_last": 1, "keep_weights": 2})}
        ),
        size.params,
        max_steps,
    )
    raise SpecError(
        f"the run's checkpoints need about {human_bytes(size.peak_bytes)} at their peak "
        f"({size.kept_states} DeepSpeed state(s) of {human_bytes(size.state_bytes)} and "
        f"{size.kept_weights} HF weights of {human_bytes(size.hf_bytes)}, for "
        f"{size.params:,} parameters in {'bf16' if tr.bf16 else 'fp32'}; {size.checkpoints} "
        f"checkpoints over {max_steps} steps), but the filesystem of {root} has "
        f"{human_bytes(free)} free. Keep fewer: training.keep_last = 1 and "
        f"training.keep_weights = 2 need about {human_bytes(frugal.peak_bytes)}; or raise "
        "training.checkpoint_every, or free space, or set runs_dir elsewhere"
    )

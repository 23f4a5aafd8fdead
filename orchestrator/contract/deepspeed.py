"""The DeepSpeed config: a JSON file under jobs/, with "auto" values filled from the job spec.

Batch size, accumulation, clipping and bf16 live in the job spec, once. The JSON may leave them
"auto" (filled here) or repeat them; a value that disagrees with the spec is an error, because
DeepSpeed would silently train with a different global batch than the one the user asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.contract.errors import SpecError
from orchestrator.contract.spec import TrainingSpec


def build_deepspeed_config(tr: TrainingSpec, world_size: int) -> dict[str, Any]:
    path = Path(tr.deepspeed_config)
    try:
        cfg: dict[str, Any] = json.loads(path.read_text())
    except OSError as e:
        raise SpecError(f"training.deepspeed_config: cannot read {path} ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    if "optimizer" in cfg or "scheduler" in cfg:
        raise SpecError(
            f"{path}: remove the 'optimizer'/'scheduler' blocks; orch passes AdamW and its "
            "schedule from the job spec (training.lr, warmup_steps, lr_schedule)"
        )
    wanted: dict[tuple[str, ...], Any] = {
        ("train_micro_batch_size_per_gpu",): tr.batch_size,
        ("gradient_accumulation_steps",): tr.grad_accum,
        ("train_batch_size",): tr.batch_size * tr.grad_accum * world_size,
        ("gradient_clipping",): tr.grad_clip,
        ("bf16", "enabled"): tr.bf16,
    }
    for keys, value in wanted.items():
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        current = node.get(keys[-1], "auto")
        if current != "auto" and current != value:
            raise SpecError(
                f"{path}: {'.'.join(keys)} is {current!r} but the job spec implies {value!r}; "
                'set it to "auto" (taken from the job spec) or make the two agree'
            )
        node[keys[-1]] = value
    cfg.setdefault("steps_per_print", 10**9)
    return cfg

"""LoRA on the language model with gradient checkpointing, and a ZeRO-3 run: each trains through
the real Ray Train + DeepSpeed loop and exports a plain HF directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import only_run, orch
from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights as transformers loads them (file key names differ between save formats)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_lora_with_gradient_checkpointing_trains_adapters_and_exports_merged(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=6, checkpoint_every=6)
    proc = orch(
        "submit", str(job), "--no-dashboard",
        "--set", "model.lora.r=4",
        "--set", "model.gradient_checkpointing=true",
        "--set", "evaluation.during_training=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)
    export = run / "export" / "best"
    trained, base = _weights(export), _weights(tiny_model)
    assert not any("lora_" in k or "base_layer" in k for k in trained), "adapters not merged"
    assert set(trained) == set(base)
    q = next(k for k in base if "language_model" in k and k.endswith("q_proj.weight"))
    assert not torch.equal(trained[q], base[q])  # adapters learned and were merged in
    vision = next(k for k in base if "visual" in k and k.endswith("qkv.weight"))
    assert torch.equal(trained[vision], base[vision])  # frozen


def test_zero3_trains_and_exports_gathered_weights(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=6, checkpoint_every=6)
    proc = orch(
        "submit", str(job), "--no-dashboard",
        "--set", f"training.deepspeed_config='{ROOT / 'jobs' / 'deepspeed' / 'zero3.json'}'",
        "--set", "evaluation.during_training=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)
    trained, base = _weights(run / "export" / "best"), _weights(tiny_model)
    assert set(trained) == set(base)
    # Full tensors (gathered from the ZeRO-3 partitions), not empty placeholders.
    assert all(trained[k].shape == base[k].shape for k in base)
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["overall"]["n"] > 0

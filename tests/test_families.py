"""Qwen2-VL and Qwen3-VL through the same path as Qwen2.5-VL (covered by test_e2e): a tiny model
of each family loads from its directory, trains four steps under Ray Train + DeepSpeed (Qwen2-VL
with ZeRO-3, Qwen3-VL with LoRA and gradient checkpointing), is evaluated, and its best
checkpoint is exported and loads back with its head and label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import only_run, orch
from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT
from workers.data.vqa import ImageConfig, VQAEncoder, pack, per_sample_loss, read_vqa_manifest
from workers.models.classifier import VLMClassifier, build_classifier
from workers.models.tiny import build_tiny

MODEL_TYPE = {"qwen2-vl": "qwen2_vl", "qwen3-vl": "qwen3_vl"}


@pytest.fixture(scope="module", params=sorted(MODEL_TYPE))
def family_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    family = str(request.param)
    return family, build_tiny(tmp_path_factory.mktemp(family) / "model", family)


def test_packing_is_exact_for_each_family(family_model: tuple[str, Path], demo_data: Path) -> None:
    family, path = family_model
    model = build_classifier(path, 2, "mean", "sdpa").eval()
    assert model.hf_config.model_type == MODEL_TYPE[family]
    enc = VQAEncoder(path)
    samples, _ = read_vqa_manifest(
        demo_data / "vqa_digits" / "train.jsonl", "vqa_digits", [demo_data], {"relevance": 3}
    )
    side = 2 * enc.multiple
    encoded = [enc.encode(s, ImageConfig(side, side)) for s in samples[:3]]
    batch = pack(encoded, [[0, 1, 2]], enc.image_token_id, enc.merge, enc.pad_id)
    with torch.no_grad():
        logits = model(
            **batch.model_inputs(torch.device("cpu"), torch.float32, "sdpa"), targets=batch.targets
        )
        packed, _ = per_sample_loss(logits, batch.targets, batch.segments, 3)
        for i, e in enumerate(encoded):
            alone = pack([e], [[0]], enc.image_token_id, enc.merge, enc.pad_id)
            ids = alone.input_ids
            out = model.backbone(  # transformers' own positions and mask
                input_ids=ids,
                pixel_values=e.pixel_values,
                image_grid_thw=e.image_grid_thw,
                mm_token_type_ids=(ids == enc.image_token_id).int(),
                use_cache=False,
            )
            hidden = out.last_hidden_state[alone.targets != -100]
            loss, _ = per_sample_loss(
                model.vlm.lm_head(hidden),  # type: ignore[operator]
                alone.targets,
                alone.segments,
                1,
            )
            torch.testing.assert_close(packed[i], loss[0], rtol=1e-5, atol=1e-5)


# Each family's run also covers one training feature, so that no feature needs a run of its own:
# ZeRO-3 (weights exported gathered from the partitions) and LoRA with gradient checkpointing
# (adapters trained, merged into the exported weights, the vision tower frozen).
FEATURE = {
    "qwen2-vl": (
        "--set",
        f"training.deepspeed_config='{ROOT / 'jobs' / 'deepspeed' / 'zero3.json'}'",
    ),
    "qwen3-vl": ("--set", "model.lora.r=4", "--set", "model.gradient_checkpointing=true"),
}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights as transformers loads them (file key names differ between save formats)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.e2e
def test_family_trains_evaluates_and_exports(
    family_model: tuple[str, Path], tmp_path: Path, demo_data: Path
) -> None:
    family, path = family_model
    # One rank: the families differ in the model, not in the distributed path (test_e2e: two).
    job = demo_job(
        tmp_path, demo_data, path, max_steps=4, checkpoint_every=4, log_every=1, num_workers=1
    )
    proc = orch("submit", str(job), "--no-dashboard", *FEATURE[family], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)
    rows = [json.loads(line) for line in (run / "logs" / "train_metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in rows)
    final = json.loads((run / "eval" / "final.json").read_text())
    assert sorted(final["datasets"]) == ["digits", "faces", "textures"]
    assert final["overall"]["n"] > 0

    export = run / "export" / "best"
    info = json.loads((export / "orch_export.json").read_text())
    assert info["step"] == 4
    model = VLMClassifier.from_pretrained(export)
    assert model.hf_config.model_type == MODEL_TYPE[family]
    labels = json.loads((demo_data / "digits" / "labels.json").read_text())
    assert model.label_names("digits") == labels
    trained_head = torch.load(run / "checkpoints" / "step_000004" / "hf" / "classifier_head.pt")
    assert torch.equal(model.head.weight, trained_head["weight"])

    trained, base = _weights(export), _weights(path)
    assert set(trained) == set(base)
    # Full tensors (ZeRO-3: gathered from the partitions), not empty placeholders.
    assert all(trained[k].shape == base[k].shape for k in base)
    if family == "qwen3-vl":  # LoRA: adapters merged in, the language model changed, vision frozen
        assert not any("lora_" in k or "base_layer" in k for k in trained), "adapters not merged"
        q = next(k for k in base if "language_model" in k and k.endswith("q_proj.weight"))
        assert not torch.equal(trained[q], base[q])
        vision = next(k for k in base if "visual" in k and k.endswith("qkv.weight"))
        assert torch.equal(trained[vision], base[vision])

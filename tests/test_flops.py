"""The FLOPs formula against a hand count for the tiny model, and against PyTorch's own
FlopCounterMode on a real forward pass of that model (vision tower + merger + LM + head)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from workers.flops import TRAIN_MULTIPLIER, peak_bf16_flops, train_step_flops

# Tiny model (workers/models/tiny.py): vision hidden 32, MLP 64, depth 2, patch 14, temporal
# patch 2, 3 channels, merge 2, window 56 px = 16 patches, one full-attention block; text
# hidden 64, MLP 128, 2 layers, 4 heads (head dim 16), 2 KV heads.
# One 56x56 image: grid 1x4x4 = 16 patches. A 12-token sequence. A 10-way head.
VISION = (
    2 * 16 * 1176 * 32  # patch embedding                      1,204,224
    + 2 * (2 * 16 * 32 * 96 + 2 * 16 * 32 * 32 + 6 * 16 * 32 * 64)  # 2 blocks: 655,360
    + 2 * (4 * 16 * 16 * 32)  # attention, window = image here      65,536
    + 2 * 4 * 128 * 128
    + 2 * 4 * 128 * 64  # merger: 4 tokens of 4*32  196,608
)
TEXT = 2 * (  # 2 layers of 921,600
    2 * 12 * 64 * 64  # q
    + 4 * 12 * 64 * 32  # k, v (2 KV heads x 16)
    + 2 * 12 * 64 * 64  # o
    + 6 * 12 * 64 * 128  # gated MLP
    + 4 * 12 * 12 * 64  # scores + weighted sum
)
HEAD = 2 * 64 * 10


def test_formula_matches_the_hand_count(tiny_model: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_model)
    flops = train_step_flops(config, image_patches=[16], sequence_lengths=[12], num_labels=10)
    assert VISION == 2_121_728 and TEXT == 1_843_200
    assert flops["vision"] == TRAIN_MULTIPLIER * VISION
    assert flops["text"] == TRAIN_MULTIPLIER * TEXT
    assert flops["total"] == TRAIN_MULTIPLIER * (VISION + TEXT + HEAD) == 11_898_624


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen2-vl", "qwen3-vl"])
def test_formula_matches_pytorch_flop_counter_on_a_real_forward(
    tiny_model: Path, tmp_path: Path, family: str
) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from workers.models.tiny import build_tiny

    if family != "qwen2.5-vl":
        tiny_model = build_tiny(tmp_path / family, family)

    from workers.data.encode import ClassificationEncoder
    from workers.data.manifest import Sample
    from workers.models.classifier import build_classifier

    # Eager attention: its matmuls are visible to the counter (the CPU SDPA kernel is not).
    model = build_classifier(tiny_model, 10, "mean", "eager").eval()
    encoder = ClassificationEncoder(tiny_model, "what is in the image ?", 3136, 3136)
    from PIL import Image

    image = tiny_model.parent / "probe.png"
    Image.new("RGB", (56, 56), (120, 30, 200)).save(image)
    batch = encoder.encode([Sample("s", image, 0, "d")], {"d": 10})
    seq = int(batch.attention_mask.sum())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**batch.model_inputs(torch.device("cpu"), torch.float32))
    counted = counter.get_total_flops()
    config = AutoConfig.from_pretrained(tiny_model)
    patches = [int(batch.image_grid_thw.prod())]
    ours = train_step_flops(config, patches, [seq], num_labels=10)["total"] // TRAIN_MULTIPLIER
    assert counted == ours, (counted, ours)


def test_peak_lookup() -> None:
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756.0e12
    assert peak_bf16_flops("Intel CPU") is None

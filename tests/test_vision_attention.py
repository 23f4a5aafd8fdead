"""The speed paths of the model step compute the same function as transformers' own: the vision
tower's windows in one (grouped) attention call, its index tensors precomputed on the CPU, and
the classification batch's mRoPE positions computed in the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workers.data.encode import ClassificationEncoder
from workers.data.manifest import Sample
from workers.models.classifier import VLMClassifier, compile_blocks, load_backbone
from workers.models.tiny import FAMILIES, build_tiny
from workers.models.vision_attention import (
    VISION_VARLEN,
    grouped_sdpa,
    install_vision_precompute,
)


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    family = str(request.param)
    return build_tiny(tmp_path_factory.mktemp(family) / "model", family)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_grouped_sdpa_equals_attention_per_segment() -> None:
    torch.manual_seed(0)
    lengths = [64, 16, 64, 40, 64, 16, 3]  # full windows, edge windows, a lone short one
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v = (torch.randn(int(cu[-1]), 4, 8, dtype=torch.float64) for _ in range(3))
    out = grouped_sdpa(q, k, v, cu, scale=0.3)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        ref = torch.nn.functional.scaled_dot_product_attention(
            *(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=0.3
        ).transpose(0, 1)
        assert rel(out[a:b], ref) < 1e-12, (a, b)


def test_vision_tower_matches_per_window_sdpa_forward_and_backward(family_dir: Path) -> None:
    """Images of different sizes (so windows of several lengths): the same features and the
    same input gradients as transformers' one-call-per-window SDPA."""
    ref = load_backbone(family_dir, "eager", torch.float64)  # the per-window reference
    ours = load_backbone(family_dir, "sdpa", torch.float64)
    assert ours.config.vision_config._attn_implementation == VISION_VARLEN
    assert ours.config.text_config._attn_implementation == "sdpa"
    vc = ours.config.vision_config
    patch = vc.patch_size * vc.patch_size * vc.temporal_patch_size * vc.in_channels
    grid = torch.tensor([[1, 28, 20], [1, 16, 16], [1, 6, 10]])
    pixels = torch.randn(int(grid.prod(1).sum()), patch, dtype=torch.float64)
    results = []
    for model in (ref, ours):
        x = pixels.clone().requires_grad_(True)
        out = model.model.visual(x, grid_thw=grid).pooler_output  # type: ignore[union-attr,operator]
        out.square().sum().backward()
        results.append((out.detach(), x.grad))
    # float64 throughout, but eager takes its softmax in float32: ~1e-8 apart, not 1e-15
    assert rel(results[1][0], results[0][0]) < 1e-6
    assert rel(results[1][1], results[0][1]) < 1e-6


def test_vision_inputs_are_precomputed_for_qwen2_5_vl(family_dir: Path) -> None:
    model = load_backbone(family_dir, "sdpa", torch.float32)
    installed = bool(model.model.visual._forward_pre_hooks)  # type: ignore[union-attr]
    assert installed == (model.config.model_type == "qwen2_5_vl")
    assert install_vision_precompute(model) == installed


def test_loader_positions_give_the_model_own_logits(family_dir: Path, tmp_path: Path) -> None:
    """A right-padded classification batch (images of three shapes, so three token counts) with
    the loader's mRoPE positions gives the same logits as the model computing them itself."""
    rng = np.random.default_rng(0)
    samples = []
    for i, (w, h) in enumerate([(56, 56), (112, 56), (84, 140)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(f"s{i}", path, i, "shapes"))
    enc = ClassificationEncoder(family_dir, "what is in the image ?", 3136, 12544)
    batch = enc.encode(samples, {"shapes": 3})
    assert len(set(batch.attention_mask.sum(1).tolist())) == 3  # really padded
    model = VLMClassifier(load_backbone(family_dir, "sdpa", torch.float64), 3).double().eval()
    inputs = batch.model_inputs(torch.device("cpu"), torch.float64)
    with torch.no_grad():
        ours = model(**inputs)
        theirs = model(**{k: v for k, v in inputs.items() if k != "position_ids"})
    assert rel(ours, theirs) < 1e-8


@pytest.mark.slow  # torch.compile of every block: ~7 s
def test_compiled_blocks_compute_the_same_logits(tiny_model: Path) -> None:
    """model.compile = true: every vision block and decoder layer compiled in place (dynamo
    traces them; the eager backend keeps the test free of a C++ toolchain), same weights and
    names for checkpoints, same logits."""
    torch.manual_seed(0)
    plain = VLMClassifier(load_backbone(tiny_model, "sdpa", torch.float32), 3).eval()
    compiled = VLMClassifier(load_backbone(tiny_model, "sdpa", torch.float32), 3).eval()
    compiled.load_state_dict(plain.state_dict())
    vlm = plain.vlm.config
    n = compile_blocks(compiled.vlm, backend="eager")
    assert n == vlm.vision_config.depth + vlm.text_config.num_hidden_layers
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    grid = torch.tensor([[1, 8, 8], [1, 8, 8]])
    tokens = [vlm.vision_start_token_id] + [vlm.image_token_id] * 16 + [vlm.vision_end_token_id, 5]
    ids = torch.tensor([tokens, tokens])
    vc = vlm.vision_config
    patch = vc.patch_size * vc.patch_size * vc.temporal_patch_size * vc.in_channels
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(128, patch),
        "image_grid_thw": grid,
    }
    with torch.no_grad():
        assert rel(compiled(**inputs), plain(**inputs)) < 1e-5

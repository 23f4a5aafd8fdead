"""Training FLOPs of a Qwen2.5-VL step: vision tower + patch merger + language model.

Counting convention (the one public MFU figures use, PaLM appendix B): a matmul of (m x k) by
(k x n) costs 2*m*k*n; training costs 3x the forward (backward = 2x forward); attention
scores and the weighted sum count the full (not causal-halved) square of the attended length;
norms, activations, softmax and rotary embeddings are not counted (they are not matmuls).

Vision tower, per image of N patches (N = t*h*w of its grid), with hidden Dv, MLP width Iv:
  patch embedding   2 * N * (C*T*P*P) * Dv
  per block         2*N*Dv*3Dv (qkv) + 2*N*Dv*Dv (proj) + k * 2*N*Dv*Iv (MLP: k = 3 matmuls
                    for Qwen2.5-VL's gated MLP, 2 for the fc1/fc2 MLP of Qwen2-VL and Qwen3-VL)
                    + 2 * 2*N*W*Dv  (scores and weighted sum; W = patches attended: the window
                                     for windowed blocks, N for the full-attention blocks)
Patch merger, per image (N/m^2 merged tokens, m = spatial merge size, D = text hidden):
  2*(N/m^2)*(m^2*Dv)*(m^2*Dv) + 2*(N/m^2)*(m^2*Dv)*D
Language model, per sequence of S tokens, per layer (head dim d, KV heads g, MLP width I):
  2*S*D*D (q) + 2*2*S*D*(g*d) (k, v) + 2*S*D*D (o) + 3 * 2*S*D*I + 2 * 2*S*S*D
Heads: the classification head 2*D*L per sequence; the LM head 2*S*D*V when generating tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TRAIN_MULTIPLIER = 3


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    intermediate: int
    depth: int
    patch: int
    temporal_patch: int
    in_channels: int
    merge: int
    window_patches: int  # patches attended in a windowed block (window_size / patch)^2
    full_blocks: int  # blocks with full attention over the image
    mlp_matmuls: int = 3  # gated MLP (Qwen2.5-VL); 2 for the plain fc1/fc2 MLP (Qwen2/3-VL)
    mergers: int = 1  # Qwen3-VL adds one merger per deepstack layer


@dataclass(frozen=True)
class TextShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int = 0  # 0: hidden / heads (Qwen3 sets it explicitly)


def shapes_from_config(config: Any) -> tuple[VisionShape, TextShape]:
    """Read the counted dimensions from a Qwen2-VL / Qwen2.5-VL / Qwen3-VL config object."""
    v, t = config.vision_config, config.text_config
    window = getattr(v, "window_size", 0) or 0
    full = getattr(v, "fullatt_block_indexes", None)
    if hasattr(v, "embed_dim"):  # Qwen2-VL: embed_dim wide, fc1/fc2 MLP of mlp_ratio
        hidden, intermediate, matmuls = v.embed_dim, int(v.embed_dim * v.mlp_ratio), 2
    else:
        hidden, intermediate = v.hidden_size, v.intermediate_size
        matmuls = 3 if config.model_type == "qwen2_5_vl" else 2
    deepstack = getattr(v, "deepstack_visual_indexes", None) or []
    return (
        VisionShape(
            hidden=hidden,
            intermediate=intermediate,
            depth=v.depth,
            patch=v.patch_size,
            temporal_patch=v.temporal_patch_size,
            in_channels=v.in_channels,
            merge=v.spatial_merge_size,
            window_patches=(window // v.patch_size) ** 2 if window else 0,
            full_blocks=len(full) if full is not None else v.depth,
            mlp_matmuls=matmuls,
            mergers=1 + len(deepstack),
        ),
        TextShape(
            hidden=t.hidden_size,
            intermediate=t.intermediate_size,
            layers=t.num_hidden_layers,
            heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads,
            vocab=t.vocab_size,
            head_dim=getattr(t, "head_dim", None) or 0,
        ),
    )


def vision_forward_flops(v: VisionShape, patches: int, merger_out: int) -> int:
    n, d = patches, v.hidden
    embed = 2 * n * (v.in_channels * v.temporal_patch * v.patch * v.patch) * d
    dense = 2 * n * d * 3 * d + 2 * n * d * d + v.mlp_matmuls * 2 * n * d * v.intermediate
    windowed = v.depth - v.full_blocks
    attended = min(v.window_patches, n) if v.window_patches else n
    attn = v.full_blocks * (4 * n * n * d) + windowed * (4 * n * attended * d)
    merged, wide = n // v.merge**2, d * v.merge**2
    merger = 2 * merged * wide * wide + 2 * merged * wide * merger_out
    return embed + v.depth * dense + attn + v.mergers * merger


def text_forward_flops(t: TextShape, tokens: int) -> int:
    s, d = tokens, t.hidden
    head_dim = t.head_dim or d // t.heads
    q = t.heads * head_dim
    per_layer = (
        2 * s * d * q
        + 2 * 2 * s * d * (t.kv_heads * head_dim)
        + 2 * s * q * d
        + 3 * 2 * s * d * t.intermediate
        + 2 * 2 * s * s * q
    )
    return t.layers * per_layer


def train_step_flops(
    config: Any,
    image_patches: Sequence[int],
    sequence_lengths: Sequence[int],
    *,
    num_labels: int = 0,
    lm_head_tokens: int = 0,
) -> dict[str, int]:
    """FLOPs of one training step (forward + backward), by component.

    ``image_patches``: patches of each image in the step (grid t*h*w before merging);
    ``sequence_lengths``: tokens of each sequence (image tokens included); ``num_labels``: width
    of a classification head; ``lm_head_tokens``: tokens whose LM-head logits are computed.
    """
    v, t = shapes_from_config(config)
    vision = sum(vision_forward_flops(v, n, t.hidden) for n in image_patches)
    text = sum(text_forward_flops(t, s) for s in sequence_lengths)
    heads = (
        2 * t.hidden * num_labels * len(sequence_lengths) + 2 * lm_head_tokens * t.hidden * t.vocab
    )
    parts = {"vision": vision, "text": text, "heads": heads}
    return {k: TRAIN_MULTIPLIER * x for k, x in parts.items()} | {
        "total": TRAIN_MULTIPLIER * sum(parts.values())
    }


# Dense bf16 peak of common accelerators, FLOP/s (vendor datasheets, without sparsity).
PEAK_BF16 = {
    "H100 SXM": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H200": 989.4e12,
    "A100": 312.0e12,
}


def peak_bf16_flops(device_name: str) -> float | None:
    name = device_name.upper()
    if "H200" in name:
        return PEAK_BF16["H200"]
    if "H100" in name:
        return PEAK_BF16["H100 PCIe"] if "PCIE" in name else PEAK_BF16["H100 SXM"]
    if "A100" in name:
        return PEAK_BF16["A100"]
    return None

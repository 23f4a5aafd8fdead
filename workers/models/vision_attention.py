"""Variable-length attention for the Qwen-VL vision towers, in one or a few kernel launches.

The vision tower attends within windows (Qwen2.5-VL: 8x8 patches in 28 of 32 blocks) and within
images (the full-attention blocks), given as ``cu_seqlens`` over one packed sequence. With
``sdpa`` transformers runs one attention call per window: a batch of sixteen 448x448 images is
256 windows, so 256 launches per block, forward and backward -- the tower becomes
launch-bound and the GPU idles (measured: 8 % MFU for the 3B classification step on an H100).

``orch_flash_varlen`` is registered with transformers' AttentionInterface and set on the
vision config only (the language model keeps its own implementation):

- on CUDA in bf16/fp16, with PyTorch's ``torch.nn.attention.varlen.varlen_attn`` (the Flash
  Attention kernel that ships inside PyTorch, no extra package), all windows are one launch;
- elsewhere (CPU, fp32, older PyTorch), windows of equal length are gathered into one batched
  SDPA call per distinct length -- the same numbers as per-window SDPA, a handful of launches.

Its name contains "flash" because that is what makes the vision attention pass ``cu_seqlens``
to the attention function instead of splitting per window.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

VISION_VARLEN = "orch_flash_varlen"


def _varlen_kernel() -> Any | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def grouped_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: float | None,
) -> torch.Tensor:
    """Block-diagonal attention over (T, H, D) tensors, one SDPA call per distinct segment
    length. Returns (T, H, D)."""
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in itertools.pairwise(bounds)]
    out = torch.empty_like(query)
    for length in sorted(set(lengths)):
        starts = [a for a, n in zip(bounds[:-1], lengths, strict=True) if n == length]
        index = (
            torch.tensor(starts, device=query.device).unsqueeze(1)
            + torch.arange(length, device=query.device).unsqueeze(0)
        ).reshape(-1)
        # (n, L, H, D) -> (n, H, L, D)
        q, k, v = (t.index_select(0, index).unflatten(0, (len(starts), length)).transpose(1, 2)
                   for t in (query, key, value))  # fmt: skip
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
        out.index_copy_(0, index, o.transpose(1, 2).reshape(-1, *query.shape[1:]))
    return out


def varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The AttentionInterface function: (1, H, T, D) inputs and ``cu_seq_lens`` -> (1, T, H, D)."""
    if cu_seq_lens_q is None or attention_mask is not None or is_causal:
        raise ValueError(
            f"{VISION_VARLEN} is for the vision tower's non-causal packed attention "
            "(cu_seq_lens given, no mask); set it on the vision config only"
        )
    if dropout:
        raise ValueError(f"{VISION_VARLEN} has no attention dropout (got {dropout})")
    cu_k = cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q
    if not torch.equal(cu_seq_lens_q, cu_k):
        raise ValueError(f"{VISION_VARLEN} needs the same segments for queries and keys")
    q, k, v = (t.squeeze(0).transpose(0, 1) for t in (query, key, value))  # (T, H, D)
    kernel = _varlen_kernel()
    if kernel is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        cu = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
        longest = max_length_q or int((cu[1:] - cu[:-1]).max())
        out = kernel(
            q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, longest, longest, scale=scaling
        )
    else:
        out = grouped_sdpa(q, k, v, cu_seq_lens_q, scaling)
    return out.unsqueeze(0), None


def register() -> None:
    """Make ``orch_flash_varlen`` a known attention implementation (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VISION_VARLEN, varlen_attention_forward)


def use_varlen_vision_attention(vlm: nn.Module, text_implementation: str) -> str:
    """Switch the vision tower of a loaded Qwen-VL to ``orch_flash_varlen`` when its text
    implementation is sdpa (flash_attention_2 already runs one varlen call; eager stays the
    reference). Returns the vision tower's implementation."""
    config = getattr(vlm, "config", None)
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return text_implementation
    if text_implementation != "sdpa":
        return str(vision._attn_implementation)
    register()
    vision._attn_implementation = VISION_VARLEN
    for module in vlm.modules():
        sub = getattr(module, "config", None)
        if sub is not None and sub is not vision and type(sub) is type(vision):
            sub._attn_implementation = VISION_VARLEN
    logger.info("vision attention: %s (text: %s)", VISION_VARLEN, text_implementation)
    return VISION_VARLEN


def precompute_vision_inputs(vision_config: Any, grid: torch.Tensor, device: torch.device) -> dict:
    """Qwen2.5-VL's per-forward vision tensors (rotary position ids, per-image and per-window
    segments, the window permutation), computed on the CPU from the image grid.

    In the model they are built from ``grid_thw`` on the GPU with per-image loops, ``.tolist()``
    and ``unique_consecutive``: a hundred tiny launches and several device syncs per forward,
    during which the GPU idles. transformers lets callers pass them precomputed (the names
    below are the keys its vision_utils pop)."""
    from transformers import vision_utils

    grid = grid.cpu()
    merge = int(vision_config.spatial_merge_size)
    positions = vision_utils.get_vision_position_ids(grid, merge)
    cu = vision_utils.get_vision_cu_seqlens(grid)
    window_index, cu_window = vision_utils.get_vision_window_index(
        grid, merge, int(vision_config.window_size), int(vision_config.patch_size)
    )

    def longest(bounds: torch.Tensor) -> int:
        return int((bounds[1:] - bounds[:-1]).max())

    return {
        "position_ids": positions.to(device, non_blocking=True),
        "cu_seqlens": cu.to(device, non_blocking=True),
        "max_seqlen": longest(cu),
        "window_index": window_index.to(device, non_blocking=True),
        "cu_window_seqlens": cu_window.to(device, non_blocking=True),
        "max_window_seqlen": longest(cu_window),
    }


def install_vision_precompute(vlm: nn.Module) -> bool:
    """For Qwen2.5-VL: a pre-hook on the vision tower that passes ``precompute_vision_inputs``
    (one device-to-host copy of the small grid instead of a hundred launches and several syncs;
    none when the grid already is on the CPU). Returns whether it was installed."""
    config = getattr(vlm, "config", None)
    if getattr(config, "model_type", None) != "qwen2_5_vl":
        return False
    try:
        from transformers import vision_utils
    except ImportError:
        return False
    if not hasattr(vision_utils, "get_vision_window_index"):
        return False
    visual = vlm.model.visual  # type: ignore[union-attr]
    assert isinstance(visual, nn.Module)
    vision_config = visual.config

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        pixels = kwargs.get("hidden_states", args[0] if args else None)
        if grid is None or pixels is None or "window_index" in kwargs:
            return args, kwargs
        extra = precompute_vision_inputs(vision_config, grid, pixels.device)
        if "grid_thw" in kwargs:
            kwargs["grid_thw"] = grid.to(pixels.device, non_blocking=True)
        return args, {**kwargs, **extra}

    visual.register_forward_pre_hook(hook, with_kwargs=True)
    return True

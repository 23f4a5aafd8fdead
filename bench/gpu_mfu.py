"""gpu_mfu, gpu_tokens_per_s and peak memory of a Qwen2.5-VL-3B-architecture training step.

The model is built from the 3B config with random weights (nothing is downloaded), bf16, on
one GPU, trained with fused AdamW. Two steps are measured:

- classification: B images of 448x448 (1,024 patches, 256 merged tokens each) plus a short
  prompt, mean-pooled into a 2,000-way head (the food-mix shape);
- vqa: one 4,096-token sequence holding 8 images (2,048 image tokens) and 2,048 text tokens
  with LM-head loss on the text tokens.

MFU = (FLOPs of the step by workers/flops.py) / (step time x dense bf16 peak of the device).
The baseline in the same run is a pure bf16 matmul of the LM's MLP shape, whose achieved
FLOP/s (as a share of peak) is what this device reaches at best; the ratio mfu/matmul shows
how far the model step is from it.

The classification step runs through orch's own model (workers.models.VLMClassifier, its
pooling and head, the vision attention orch selects); ``--vision-attn per-window`` restores
transformers' one-call-per-window SDPA for comparison, and ``--compile`` compiles each vision
block and decoder layer (regional torch.compile). ``--profile`` prints the GPU kernels that
take the most time in one step and the share of the step the GPU is busy.

    python bench/gpu_mfu.py [--batch 16] [--steps 10] [--attn sdpa] [--vision-attn per-window]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from workers.data.vqa import mrope_positions
from workers.flops import peak_bf16_flops, train_step_flops
from workers.models.classifier import VLMClassifier
from workers.models.vision_attention import install_vision_precompute, use_varlen_vision_attention

PATCHES, MERGED = 1024, 256  # a 448x448 image: 32x32 patches of 14 px, 2x2 merged


def config_3b() -> Any:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
            "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
            "max_position_embeddings": 128000, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [16, 24, 24]},
        },
        vision_config={
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        },
        tie_word_embeddings=True,
    )  # fmt: skip


def inputs(config: Any, images_per_seq: int, text: int, batch: int) -> dict[str, torch.Tensor]:
    seq = []
    for _ in range(images_per_seq):
        seq += [config.vision_start_token_id] + [config.image_token_id] * MERGED
        seq += [config.vision_end_token_id]
    seq += [1000 + i % 5000 for i in range(text)]
    ids = torch.tensor([seq] * batch, device="cuda")
    n_images = images_per_seq * batch
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(n_images * PATCHES, 1176, device="cuda", dtype=torch.bfloat16),
        "image_grid_thw": torch.tensor([[1, 32, 32]] * n_images, device="cuda"),
    }


def time_steps(step: Any, steps: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def matmul_baseline(peak: float) -> float:
    a = torch.randn(16384, 2048, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(2048, 11008, device="cuda", dtype=torch.bfloat16)
    seconds = time_steps(lambda: a @ b, 50)
    return 2 * 16384 * 2048 * 11008 / seconds / peak


KERNEL_KINDS = (
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "splitk")),
    ("attention", ("flash", "fmha", "sdpa", "attention")),
    ("optimizer", ("multi_tensor_apply", "adam")),
    ("fused (triton)", ("triton",)),
)


def kernel_kind(name: str) -> str:
    lower = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in lower for k in keys):
            return kind
    return "other elementwise"


def profile_step(step: Any, label: str, top: int = 25) -> None:
    """Print the GPU time of one step by kind of kernel, the kernels that take the most, and
    the share of the step the GPU is busy."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    kernels = [
        e
        for e in prof.key_averages()
        if e.self_device_time_total > 0 and str(e.device_type).endswith("CUDA") and "#" not in e.key
    ]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    print(f"{label}_profile_wall_s={wall:.4f} gpu_busy_s={busy:.4f} busy_share={busy / wall:.3f}")
    kinds: dict[str, float] = {}
    for e in kernels:
        kinds[kernel_kind(e.key)] = kinds.get(kernel_kind(e.key), 0.0) + e.self_device_time_total
    for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {label} {kind:18s} {us / 1e3:9.2f} ms  {us / 1e6 / busy:6.1%}")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]:
        print(f"  {e.self_device_time_total / 1e3:9.2f} ms {e.count:6d}x  {e.key[:110]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument(
        "--attn", default="auto", choices=["auto", "flash_attention_2", "sdpa", "eager"]
    )
    ap.add_argument("--vision-attn", default="orch", choices=["orch", "per-window"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile each block (regional)")
    ap.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip-vqa", action="store_true")
    ap.add_argument(
        "--positions",
        default="loader",
        choices=["model", "loader"],
        help="mRoPE position ids computed by the model, or by orch's loader (on the CPU)",
    )
    ap.add_argument(
        "--vision-inputs",
        default="precomputed",
        choices=["model", "precomputed"],
        help="Qwen2.5-VL's per-forward vision tensors built by the model on the GPU, or on the CPU",
    )
    ap.add_argument(
        "--vision-mlp-width",
        type=int,
        default=0,
        help="what-if: build the vision MLP this wide (3,456 = 3,420 padded to a multiple of 64)",
    )
    ap.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step")
    args = ap.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    attn = args.attn
    if attn == "auto":
        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    name = torch.cuda.get_device_name()
    peak = peak_bf16_flops(name)
    if peak is None:
        raise SystemExit(f"unknown bf16 peak for {name}; add it to workers/flops.py")
    config = config_3b()
    config._attn_implementation = attn
    counted = config_3b()  # FLOPs of the real architecture: padding is not useful work
    if args.vision_mlp_width:
        config.vision_config.intermediate_size = args.vision_mlp_width
    torch.manual_seed(0)
    with torch.device("cuda"):
        vlm = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
        model = VLMClassifier(vlm, num_labels=2000, pooling="mean").to(torch.bfloat16)
    vision_attn = config.vision_config._attn_implementation
    if args.vision_attn == "orch":
        vision_attn = use_varlen_vision_attention(vlm, attn)
    if args.vision_inputs == "precomputed":
        install_vision_precompute(vlm)
    if args.gradient_checkpointing:
        vlm.gradient_checkpointing_enable()
    if args.compile:
        for block in [*vlm.model.visual.blocks, *vlm.model.language_model.layers]:
            block.compile(mode=args.compile_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    n_params = sum(p.numel() for p in vlm.parameters())
    print(f"device={name.replace(' ', '_')}")
    print(f"torch={torch.__version__}")
    print(f"attn={attn}")
    print(f"vision_attn={vision_attn}")
    print(f"compile={args.compile} mode={args.compile_mode}")
    print(f"positions={args.positions}")
    print(f"vision_inputs={args.vision_inputs}")
    print(f"accumulate={args.accumulate}")
    print(f"vision_mlp_width={config.vision_config.intermediate_size}")
    print(f"params={n_params}")
    print(f"matmul_baseline_mfu={matmul_baseline(peak):.3f}")

    # classification step, through orch's classifier (pooling, head, fp32 loss)
    cls = inputs(config, 1, 16, args.batch)
    if args.positions == "loader":
        merge = config.vision_config.spatial_merge_size
        rows = [
            mrope_positions(ids, torch.tensor([[1, 32, 32]]), config.image_token_id, merge)
            for ids in cls["input_ids"].cpu()
        ]
        mrope = torch.stack(rows, dim=1)  # [3, B, L]
        text = torch.arange(mrope.shape[-1]).expand(1, *mrope.shape[1:])
        cls["position_ids"] = torch.cat([text, mrope]).cuda()
    labels = torch.randint(0, 2000, (args.batch,), device="cuda")

    def cls_step() -> None:
        if args.compile and args.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        for _ in range(args.accumulate):
            logits = model(**cls)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(cls_step, args.steps)
    seq = cls["input_ids"].shape[1]
    rows = args.batch * args.accumulate
    flops = train_step_flops(counted, [PATCHES] * rows, [seq] * rows, num_labels=2000)
    mfu = flops["total"] / seconds / peak
    print(f"cls_step_s={seconds:.4f}")
    print(f"cls_seq_len={seq}")
    print(f"gpu_mfu={mfu:.4f}")
    print(f"gpu_tokens_per_s={seq * rows / seconds:.0f}")
    print(f"cls_vision_flops_share={flops['vision'] / flops['total']:.3f}")
    print(f"cls_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")
    if args.profile:
        profile_step(cls_step, "cls")
    if args.skip_vqa:
        return

    # VQA step: one 4,096-token sequence, 8 images, LM loss on the 2,048 text tokens
    vqa = inputs(config, 8, 4096 - 8 * (MERGED + 2), 1)
    text_tokens = 4096 - 8 * (MERGED + 2)
    targets = vqa["input_ids"].clone()
    targets[:, : 8 * (MERGED + 2)] = -100

    def vqa_step() -> None:
        out = vlm(**vqa, labels=targets, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(vqa_step, args.steps)
    flops = train_step_flops(counted, [PATCHES] * 8, [4096], lm_head_tokens=4096)
    print(f"vqa_step_s={seconds:.4f}")
    print(f"gpu_vqa_mfu={flops['total'] / seconds / peak:.4f}")
    print(f"gpu_vqa_tokens_per_s={4096 / seconds:.0f}")
    print(f"vqa_text_tokens={text_tokens}")
    print(f"vqa_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")
    if args.profile:
        profile_step(vqa_step, "vqa")


if __name__ == "__main__":
    main()

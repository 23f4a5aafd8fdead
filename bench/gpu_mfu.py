"""gpu_mfu, gpu_tokens_per_s and peak memory of a Qwen2.5-VL-3B-architecture training step.

The model is built from the 3B config with random weights (nothing is downloaded), bf16, on
one GPU, trained with fused AdamW. Two steps are measured:

- classification: B images of 448x448 (1,024 patches, 256 merged tokens each) plus a short
  prompt, mean-pooled into a 2,000-way head (the food-mix shape);
- vqa: one 4,096-token sequence holding 8 images (2,048 image tokens) and 2,048 text tokens
  with LM-head loss on the text tokens.

MFU = (FLOPs of the step by workers/flops.py) / (step time x dense bf16 peak of the device).
The baseline in the same run is a pure bf16 matmul of the LM's MLP shape, whose achieved
FLOP/s (as a share of peak) is what this device reaches at best; the ratios
``cls_vs_matmul``/``vqa_vs_matmul`` (step FLOP/s over matmul FLOP/s) show how far the model step
is from it.

The classification step runs through orch's own model (workers.models.VLMClassifier, its
pooling and head, the vision attention orch selects); ``--vision-attn per-window`` restores
transformers' one-call-per-window SDPA for comparison, and ``--compile`` compiles each vision
block and decoder layer (regional torch.compile). ``--profile`` prints the GPU kernels that
take the most time in one step and the share of the step the GPU is busy.

    python bench/gpu_mfu.py [--batch 16] [--steps 10] [--attn sdpa] [--vision-attn per-window]

It needs a CUDA device: without one it says so on stderr and exits with status 2 (`make bench`
skips it). ``--quick`` checks the script end to end in seconds: a tiny model of the same
architecture (2 decoder layers, 4 vision blocks, 224x224 images, 2 rows, 512-token VQA, 2 timed
steps), on the GPU when there is one, else on the CPU (in fp32), where no peak is known and the MFU
lines (gpu_mfu, gpu_vqa_mfu, matmul_baseline_mfu) and peak memory are left out; the ratios to
the matmul are printed either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from workers.data.vqa import mrope_positions
from workers.flops import peak_bf16_flops, train_step_flops
from workers.models.classifier import VLMClassifier
from workers.models.vision_attention import install_vision_precompute, use_varlen_vision_attention

EXIT_NO_CUDA = 2


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


def config_quick() -> Any:
    """The 3B's architecture (window attention, full-attention blocks, merger, mRoPE), tiny."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 2048, "hidden_size": 128, "intermediate_size": 512,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "tie_word_embeddings": True,
            "bos_token_id": 1, "eos_token_id": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 4, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
            "out_hidden_size": 128, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1, 3],
        },
        image_token_id=2000, video_token_id=2001, vision_start_token_id=2002,
        vision_end_token_id=2003, tie_word_embeddings=True,
    )  # fmt: skip


@dataclass(frozen=True)
class Shapes:
    """The measured steps' sizes: square images of ``side`` px (14-px patches, 2x2 merged)."""

    side: int = 448
    labels: int = 2000
    cls_text: int = 16
    vqa_images: int = 8
    vqa_len: int = 4096
    matmul: tuple[int, int, int] = (16384, 2048, 11008)  # tokens x LM hidden x MLP width

    @property
    def grid(self) -> int:
        return self.side // 14

    @property
    def patches(self) -> int:
        return self.grid * self.grid

    @property
    def merged(self) -> int:
        return self.patches // 4


FULL = Shapes()
QUICK = Shapes(side=224, labels=100, vqa_images=2, vqa_len=512, matmul=(1024, 128, 512))


def inputs(
    config: Any,
    shapes: Shapes,
    images_per_seq: int,
    text: int,
    batch: int,
    device: str,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    seq = []
    for _ in range(images_per_seq):
        seq += [config.vision_start_token_id] + [config.image_token_id] * shapes.merged
        seq += [config.vision_end_token_id]
    vocab = min(5000, config.image_token_id - 1000)
    seq += [1000 + i % vocab for i in range(text)]
    ids = torch.tensor([seq] * batch, device=device)
    n_images = images_per_seq * batch
    g = shapes.grid
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(n_images * shapes.patches, 1176, device=device, dtype=dtype),
        "image_grid_thw": torch.tensor([[1, g, g]] * n_images, device=device),
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Any, steps: int, device: str, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def matmul_baseline(shapes: Shapes, device: str, dtype: torch.dtype, reps: int) -> float:
    """Achieved FLOP/s of a matmul of the LM's MLP shape (in the model's dtype)."""
    m, k, n = shapes.matmul
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    seconds = time_steps(lambda: a @ b, reps, device)
    return 2 * m * k * n / seconds


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


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


def main() -> int:
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
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny model, 2 rows, 2 steps: checks the script (on the CPU without CUDA)",
    )
    args = ap.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print(
            "gpu_mfu: no CUDA device; it measures a GPU (exit 2). `--quick` runs a tiny model "
            "on the CPU to check the script.",
            file=sys.stderr,
        )
        return EXIT_NO_CUDA
    if args.profile and not cuda:
        raise SystemExit("--profile profiles GPU kernels: it needs a CUDA device")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32  # CPUs without bf16 units emulate it
    make_config, shapes = (config_quick, QUICK) if args.quick else (config_3b, FULL)
    if args.quick:
        args.batch, args.steps = 2, 2
    attn = args.attn
    if attn == "auto":
        attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_bf16_flops(name) if cuda else None
    if peak is None and not args.quick:
        raise SystemExit(f"unknown bf16 peak for {name}; add it to workers/flops.py")
    config = make_config()
    config._attn_implementation = attn
    counted = make_config()  # FLOPs of the real architecture: padding is not useful work
    if args.vision_mlp_width:
        config.vision_config.intermediate_size = args.vision_mlp_width
    torch.manual_seed(0)
    with torch.device(device):
        vlm = Qwen2_5_VLForConditionalGeneration(config).to(dtype)
        model = VLMClassifier(vlm, num_labels=shapes.labels, pooling="mean").to(dtype)
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
    print(f"dtype={str(dtype).removeprefix('torch.')}")
    print(f"attn={attn}")
    print(f"vision_attn={vision_attn}")
    print(f"compile={args.compile} mode={args.compile_mode}")
    print(f"positions={args.positions}")
    print(f"vision_inputs={args.vision_inputs}")
    print(f"accumulate={args.accumulate}")
    print(f"vision_mlp_width={config.vision_config.intermediate_size}")
    print(f"params={n_params}")
    matmul = matmul_baseline(shapes, device, dtype, 5 if args.quick else 50)
    print(f"matmul_tflops_per_s={matmul / 1e12:.4f}")
    if peak is not None:
        print(f"matmul_baseline_mfu={matmul / peak:.3f}")

    # classification step, through orch's classifier (pooling, head, fp32 loss)
    cls = inputs(config, shapes, 1, shapes.cls_text, args.batch, device, dtype)
    g = shapes.grid
    if args.positions == "loader":
        merge = config.vision_config.spatial_merge_size
        rows = [
            mrope_positions(ids, torch.tensor([[1, g, g]]), config.image_token_id, merge)
            for ids in cls["input_ids"].cpu()
        ]
        mrope = torch.stack(rows, dim=1)  # [3, B, L]
        text = torch.arange(mrope.shape[-1]).expand(1, *mrope.shape[1:])
        cls["position_ids"] = torch.cat([text, mrope]).to(device)
    labels = torch.randint(0, shapes.labels, (args.batch,), device=device)
    warmup = 1 if args.quick else 3

    def cls_step() -> None:
        if args.compile and args.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        for _ in range(args.accumulate):
            logits = model(**cls)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    seconds = time_steps(cls_step, args.steps, device, warmup)
    seq = cls["input_ids"].shape[1]
    rows = args.batch * args.accumulate
    flops = train_step_flops(
        counted, [shapes.patches] * rows, [seq] * rows, num_labels=shapes.labels
    )
    achieved = flops["total"] / seconds
    print(f"cls_step_s={seconds:.4f}")
    print(f"cls_seq_len={seq}")
    if peak is not None:
        print(f"gpu_mfu={achieved / peak:.4f}")
    print(f"cls_tflops_per_s={achieved / 1e12:.4f}")
    print(f"cls_vs_matmul={achieved / matmul:.3f}")
    print(f"gpu_tokens_per_s={seq * rows / seconds:.0f}")
    print(f"cls_vision_flops_share={flops['vision'] / flops['total']:.3f}")
    if cuda:
        print(f"cls_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")
    if args.profile:
        profile_step(cls_step, "cls")
    if args.skip_vqa:
        return 0

    # VQA step: one 4,096-token sequence, 8 images, LM loss on the 2,048 text tokens
    # (--quick: 512 tokens, 2 images)
    image_tokens = shapes.vqa_images * (shapes.merged + 2)
    text_tokens = shapes.vqa_len - image_tokens
    vqa = inputs(config, shapes, shapes.vqa_images, text_tokens, 1, device, dtype)
    targets = vqa["input_ids"].clone()
    targets[:, :image_tokens] = -100

    def vqa_step() -> None:
        out = vlm(**vqa, labels=targets, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    seconds = time_steps(vqa_step, args.steps, device, warmup)
    flops = train_step_flops(
        counted,
        [shapes.patches] * shapes.vqa_images,
        [shapes.vqa_len],
        lm_head_tokens=shapes.vqa_len,
    )
    achieved = flops["total"] / seconds
    print(f"vqa_step_s={seconds:.4f}")
    if peak is not None:
        print(f"gpu_vqa_mfu={achieved / peak:.4f}")
    print(f"vqa_tflops_per_s={achieved / 1e12:.4f}")
    print(f"vqa_vs_matmul={achieved / matmul:.3f}")
    print(f"gpu_vqa_tokens_per_s={shapes.vqa_len / seconds:.0f}")
    print(f"vqa_text_tokens={text_tokens}")
    if cuda:
        print(f"vqa_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")
    if args.profile:
        profile_step(vqa_step, "vqa")
    return 0


if __name__ == "__main__":
    sys.exit(main())

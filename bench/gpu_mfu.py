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

    python bench/gpu_mfu.py [--batch 16] [--steps 10] [--attn sdpa]
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

from workers.flops import peak_bf16_flops, train_step_flops

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument(
        "--attn", default="auto", choices=["auto", "flash_attention_2", "sdpa", "eager"]
    )
    ap.add_argument("--gradient-checkpointing", action="store_true")
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
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    head = torch.nn.Linear(2048, 2000, device="cuda", dtype=torch.bfloat16)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device={name.replace(' ', '_')}")
    print(f"attn={attn}")
    print(f"params={n_params}")
    print(f"matmul_baseline_mfu={matmul_baseline(peak):.3f}")

    # classification step
    cls = inputs(config, 1, 16, args.batch)
    labels = torch.randint(0, 2000, (args.batch,), device="cuda")

    def cls_step() -> None:
        hidden = model.model(**cls, use_cache=False).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden.mean(1)).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(cls_step, args.steps)
    seq = cls["input_ids"].shape[1]
    flops = train_step_flops(config, [PATCHES] * args.batch, [seq] * args.batch, num_labels=2000)
    mfu = flops["total"] / seconds / peak
    print(f"cls_step_s={seconds:.4f}")
    print(f"cls_seq_len={seq}")
    print(f"gpu_mfu={mfu:.4f}")
    print(f"gpu_tokens_per_s={seq * args.batch / seconds:.0f}")
    print(f"cls_vision_flops_share={flops['vision'] / flops['total']:.3f}")
    print(f"cls_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")

    # VQA step: one 4,096-token sequence, 8 images, LM loss on the 2,048 text tokens
    vqa = inputs(config, 8, 4096 - 8 * (MERGED + 2), 1)
    text_tokens = 4096 - 8 * (MERGED + 2)
    targets = vqa["input_ids"].clone()
    targets[:, : 8 * (MERGED + 2)] = -100

    def vqa_step() -> None:
        out = model(**vqa, labels=targets, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(vqa_step, args.steps)
    flops = train_step_flops(config, [PATCHES] * 8, [4096], lm_head_tokens=4096)
    print(f"vqa_step_s={seconds:.4f}")
    print(f"gpu_vqa_mfu={flops['total'] / seconds / peak:.4f}")
    print(f"gpu_vqa_tokens_per_s={4096 / seconds:.0f}")
    print(f"vqa_text_tokens={text_tokens}")
    print(f"vqa_peak_mem_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}")


if __name__ == "__main__":
    main()

"""Throughput and utilisation of the training loop, summed over ranks between two reports.

tokens/s is split into text and image tokens (image tokens are the merged <|image_pad|>
tokens the language model sees); FLOPs come from workers/flops.py (vision + merger + LM +
head, not the LM alone); MFU divides by the device's dense bf16 peak times the world size and
is omitted where no peak is known (CPUs). The data-wait fraction is the share of the loop spent
building batches (sampling, decoding, resizing, collating).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from workers.data.encode import ClassificationBatch
from workers.data.microbatch import StepBatch
from workers.flops import peak_bf16_flops, train_step_flops


class Throughput:
    FIELDS = (
        "text_tokens",
        "image_tokens",
        "flops",
        "data_wait_s",
        "steps",
        "pack_fill",
        "pack_budget_fill",
        "packs",
        "images_per_row",
    )

    def __init__(
        self,
        config: Any,
        num_labels: int,
        image_token_id: int,
        device: torch.device,
        pack_max_tokens: int = 0,
    ) -> None:
        self.config = config
        self.pack_max_tokens = pack_max_tokens
        self.num_labels = num_labels
        self.image_token_id = image_token_id
        self.device = device
        self.peak = (
            peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        )
        self.sums = dict.fromkeys(self.FIELDS, 0.0)
        self.t0 = time.perf_counter()

    def add_batch(self, batch: ClassificationBatch, data_wait_s: float) -> None:
        mask = batch.attention_mask.bool()
        self._add(
            batch.input_ids[mask],
            batch.image_grid_thw.prod(-1).tolist(),
            mask.sum(-1).tolist(),
            num_labels=self.num_labels,
        )
        self.sums["data_wait_s"] += data_wait_s

    def add_step_batch(self, batch: StepBatch, data_wait_s: float) -> None:
        """A mixed micro-batch, counted by each share's layout (placeholders included: they are
        computed too): padded rows through the head (attention per row), or packed samples
        (attention and FLOPs per sample, LM head at the supervised positions only)."""
        for part in batch.parts:
            b = part.batch
            if hasattr(b, "segments"):
                self._add_packed(b)
            elif hasattr(b, "attention_mask"):
                self.add_batch(b, 0.0)
        self.sums["data_wait_s"] += data_wait_s

    def _add_packed(self, v: Any) -> None:
        real = v.segments >= 0
        lengths = torch.bincount(v.segments[real], minlength=v.n_samples).tolist()
        self._add(
            v.input_ids[real],
            v.image_grid_thw.prod(-1).tolist(),
            lengths,
            lm_head_tokens=int((v.targets != -100).sum()),
        )
        self.sums["pack_fill"] += v.fill_ratio()
        if self.pack_max_tokens:  # of the rows' whole budget, not only of the longest row
            rows = int(v.segments.shape[0])
            self.sums["pack_budget_fill"] += int(real.sum()) / (rows * self.pack_max_tokens)
        self.sums["packs"] += 1
        self.sums["images_per_row"] += v.images_per_row()

    def _add(
        self,
        tokens: torch.Tensor,
        patches: list[int],
        lengths: list[int],
        *,
        num_labels: int = 0,
        lm_head_tokens: int = 0,
    ) -> None:
        image = int((tokens == self.image_token_id).sum())
        flops = train_step_flops(
            self.config, patches, lengths, num_labels=num_labels, lm_head_tokens=lm_head_tokens
        )
        self.sums["text_tokens"] += int(tokens.numel()) - image
        self.sums["image_tokens"] += image
        self.sums["flops"] += flops["total"]

    def step_done(self) -> None:
        self.sums["steps"] += 1

    def reduce_and_reset(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        values = torch.tensor([self.sums[k] for k in self.FIELDS], dtype=torch.float64)
        world = 1
        if dist.is_initialized():
            world = dist.get_world_size()
            values = values.to(self.device)
            dist.all_reduce(values)
            values = values.cpu()
        text, image, flops, wait, steps, fill, budget_fill, packs, images_per_row = values.tolist()
        steps /= world  # every rank counted the same steps
        row = {
            "report_s": elapsed,
            "step_time_s": elapsed / max(steps, 1.0),
            "text_tokens_per_s": text / elapsed,
            "image_tokens_per_s": image / elapsed,
            "tflops_per_s": flops / elapsed / 1e12,
            "data_wait_fraction": wait / world / elapsed,
        }
        if packs:
            row["pack_fill"] = fill / packs  # real tokens over the padded rows' tokens
            if self.pack_max_tokens:
                row["pack_budget_fill"] = budget_fill / packs  # over rows x pack_max_tokens
            row["images_per_pack_row"] = images_per_row / packs
        if self.peak is not None:
            row["mfu"] = flops / elapsed / (self.peak * world)
        if self.device.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.sums = dict.fromkeys(self.FIELDS, 0.0)
        self.t0 = time.perf_counter()
        return row

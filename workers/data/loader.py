"""The training data loader: the mixture plan, sliced per rank and per DataLoader worker.

Every rank computes the same global plan (``MixtureSampler``) and keeps its own slice of each
global micro-batch; inside a rank, DataLoader worker ``w`` of ``W`` builds micro-batches
``w, w + W, w + 2W, ...`` of that slice. So no sample is read twice, and because PyTorch hands
out the workers' results round-robin, the loop consumes micro-batches in plan order, whatever
the number of workers. Each batch carries the sampler position after it: the position saved in
a checkpoint is the one of the last batch trained on, never of batches prefetched but unused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from workers.data.microbatch import Batcher, StepBatch
from workers.data.mixture import MixturePosition, MixtureSampler, rank_slice
from workers.data.packing import PackPool


@dataclass(frozen=True)
class Layout:
    """How a rank's picks of one micro-batch are packed, when the plan packs by tokens: the
    packed samples come last in the picks, ``rows`` groups their positions (in the picks) into
    packed rows; ``global_samples`` counts the micro-batch's samples over every rank (the loss's
    denominator, so that each sample weighs the same whatever rank it is on)."""

    rows: tuple[tuple[int, ...], ...]
    global_samples: int


@dataclass(frozen=True)
class Plan:
    sizes: dict[str, int]
    weights: dict[str, float]
    seed: int
    start_step: int  # the last step already trained (0 for a fresh run)
    max_steps: int
    grad_accum: int
    global_micro: int  # samples per global micro-batch (batch_size x world)
    rank: int
    world: int
    position: dict[str, Any] | None = None
    packed: dict[str, Any] | None = None
    """training.batch_tokens: the datasets packed by tokens, each with its rows' [tokens, images]
    (an array, an index's Column, or the path of an .npy file)."""
    pack_rows: int = 0  # packed rows per rank and micro-batch
    pack_max_tokens: int = 0
    pack_max_images: int = 0
    buffer_tokens: int = 0  # drawn tokens kept waiting beyond a micro-batch's budget

    def picks(
        self,
    ) -> Iterator[tuple[int, int, list[tuple[str, int]], dict[str, Any], Layout | None]]:
        """(step, micro, this rank's picks, position after them, their layout), in order."""
        if self.packed:
            yield from self._token_picks()
            return
        pos = MixturePosition.from_json(self.position) if self.position else None
        sampler = MixtureSampler(self.sizes, self.weights, self.seed, pos)
        for step in range(self.start_step + 1, self.max_steps + 1):
            for micro in range(self.grad_accum):
                picks = rank_slice(
                    sampler.global_batch(step, micro, self.global_micro), self.rank, self.world
                )
                yield step, micro, picks, sampler.pos.to_json(), None

    def _token_picks(
        self,
    ) -> Iterator[tuple[int, int, list[tuple[str, int]], dict[str, Any], Layout | None]]:
        """Packing by a token budget. Every micro-batch takes world x pack_rows packs from the
        pool of drawn packed samples, after drawing (world picks at a time, seeded by step,
        micro-batch and draw) until the pool holds the budget plus buffer_tokens; the other
        kinds' picks drawn meanwhile are the micro-batch's too. Pack k goes to rank k % world,
        the other picks as rank_slice deals them. The pool is in the position (``pending``),
        so a resumed plan packs what the uninterrupted one would."""
        assert self.packed is not None
        lengths = {
            n: np.load(v, mmap_mode="r") if isinstance(v, str | Path) else v
            for n, v in self.packed.items()
        }
        pos = MixturePosition.from_json(self.position) if self.position else None
        sampler = MixtureSampler(self.sizes, self.weights, self.seed, pos)
        pool = PackPool(self.pack_max_tokens, self.pack_max_images)

        def add(name: str, index: int) -> None:
            tokens, images = (int(v) for v in lengths[name][index])
            pool.add(name, index, tokens, images)

        for name, index in pos.pending if pos else []:
            add(name, index)
        n_packs = self.pack_rows * self.world
        need = n_packs * self.pack_max_tokens + self.buffer_tokens
        for step in range(self.start_step + 1, self.max_steps + 1):
            for micro in range(self.grad_accum):
                others: list[tuple[str, int]] = []
                draw = 0
                while pool.tokens < need:
                    for name, index in sampler.draw([step, micro, draw], self.world):
                        if name in lengths:
                            add(name, index)
                        else:
                            others.append((name, index))
                    draw += 1
                packs = pool.take(n_packs)
                picks = rank_slice(others, self.rank, self.world)
                rows = []
                for pack in packs[self.rank :: self.world]:
                    rows.append(tuple(range(len(picks), len(picks) + len(pack))))
                    picks += [(name, index) for name, index, _ in pack]
                total = len(others) + sum(len(p) for p in packs)
                position = sampler.pos.to_json() | {"pending": [list(p) for p in pool.pending()]}
                yield step, micro, picks, position, Layout(tuple(rows), total)


class PlanDataset(IterableDataset[StepBatch]):
    def __init__(self, plan: Plan, batcher: Batcher) -> None:
        self.plan = plan
        self.batcher = batcher

    def __iter__(self) -> Iterator[StepBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, (_step, _micro, picks, position, layout) in enumerate(self.plan.picks()):
            if k % workers != worker:
                continue
            batch = self.batcher.build(picks, layout)
            batch.data_position = position
            yield batch


def make_loader(plan: Plan, batcher: Batcher, workers: int, prefetch: int) -> DataLoader[StepBatch]:
    # Tokenizers' own thread pool and fork do not mix; the workers are the parallelism.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return DataLoader(
        PlanDataset(plan, batcher),
        batch_size=None,  # a StepBatch is already one micro-batch
        num_workers=workers,
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=False,
        collate_fn=_identity,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def _identity(batch: Any) -> Any:
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one core per loader worker; the trainer keeps its own threads

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
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from workers.data.microbatch import Batcher, StepBatch
from workers.data.mixture import MixturePosition, MixtureSampler, rank_slice


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
    position: dict[str, dict[str, int]] | None = None

    def picks(self) -> Iterator[tuple[int, int, list[tuple[str, int]], dict[str, Any]]]:
        """(step, micro, this rank's picks, position after them), in order."""
        pos = MixturePosition.from_json(self.position) if self.position else None
        sampler = MixtureSampler(self.sizes, self.weights, self.seed, pos)
        for step in range(self.start_step + 1, self.max_steps + 1):
            for micro in range(self.grad_accum):
                picks = rank_slice(
                    sampler.global_batch(step, micro, self.global_micro), self.rank, self.world
                )
                yield step, micro, picks, sampler.pos.to_json()


class PlanDataset(IterableDataset[StepBatch]):
    def __init__(self, plan: Plan, batcher: Batcher) -> None:
        self.plan = plan
        self.batcher = batcher

    def __iter__(self) -> Iterator[StepBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, (_step, _micro, picks, position) in enumerate(self.plan.picks()):
            if k % workers != worker:
                continue
            batch = self.batcher.build(picks)
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

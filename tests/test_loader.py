"""The training loader: disjoint slices per rank and per DataLoader worker, plan order kept, and
a resumed run that neither repeats nor skips a sample within the epoch."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from workers.data.loader import Plan, make_loader
from workers.data.microbatch import StepBatch

SIZES = {"a": 37, "b": 23}


class RecordingBatcher:
    """Stands in for the encoders only: the loader's slicing and ordering are what is tested."""

    def build(self, picks: Sequence[tuple[str, int]]) -> Any:
        batch = StepBatch(None, None)
        batch.picks = list(picks)  # type: ignore[attr-defined]
        return batch


def plan(rank: int = 0, world: int = 1, **kw: Any) -> Plan:
    base = Plan(
        sizes=SIZES,
        weights={"a": 1.0, "b": 1.0},
        seed=3,
        start_step=0,
        max_steps=12,
        grad_accum=2,
        global_micro=4 * world,
        rank=rank,
        world=world,
    )
    return replace(base, **kw)


def consumed(p: Plan, workers: int) -> list[list[tuple[str, int]]]:
    loader = make_loader(p, RecordingBatcher(), workers, 2)  # type: ignore[arg-type]
    return [b.picks for b in loader]  # type: ignore[attr-defined]


@pytest.mark.parametrize("workers", [0, 3])
def test_loader_workers_keep_plan_order(workers: int) -> None:
    expected = [picks for _, _, picks, _ in plan().picks()]
    assert consumed(plan(), workers) == expected


def test_ranks_read_disjoint_slices_that_cover_the_global_batch() -> None:
    world = 2
    per_rank = [consumed(plan(rank=r, world=world), 2) for r in range(world)]
    for k in range(len(per_rank[0])):
        global_batch = per_rank[0][k] + per_rank[1][k]
        assert len(global_batch) == 8
        assert len(set(global_batch)) == 8  # no sample twice in one global batch


def test_resume_mid_epoch_sees_each_sample_exactly_once() -> None:
    """Stop after step 5 (a checkpoint saves the position of the last batch trained on, not of
    prefetched ones), resume from it: the two halves are the uninterrupted run, and within each
    dataset's first epoch every sample appears exactly once."""
    full = list(plan(max_steps=12).picks())
    loader = make_loader(plan(max_steps=12), RecordingBatcher(), 2, 4)  # type: ignore[arg-type]
    first: list[list[tuple[str, int]]] = []
    position = None
    for batch in loader:  # a checkpoint at step 5 = 10 micro-batches (grad_accum 2)
        first.append(batch.picks)  # type: ignore[attr-defined]
        position = batch.data_position
        if len(first) == 10:
            break
    del loader  # the run stops; prefetched batches are dropped
    resumed = consumed(plan(max_steps=12, start_step=5, position=position), 2)
    assert first + resumed == [picks for _, _, picks, _ in full]
    seen = Counter(p for picks in first + resumed for p in picks)
    for name, size in SIZES.items():
        # 12 steps x 2 micro x 4 = 96 draws over 60 samples: the first epoch of each dataset
        # is complete; no sample is drawn a second time before all the others were drawn once.
        counts = [seen[(name, i)] for i in range(size)]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1


def test_auto_loader_workers_only_with_a_spare_core_per_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.train import resolve_loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(2)))
    assert resolve_loader_workers("auto", 2, 1.0) == 0  # two ranks on two cores: none spare
    assert resolve_loader_workers("auto", 1, 1.0) == 1
    assert resolve_loader_workers(3, 2, 1.0) == 3  # an explicit count is kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert resolve_loader_workers("auto", 8, 1.0) == 1
    assert resolve_loader_workers("auto", 8, 2.0) == 0  # 16 cores all taken by 8 x 2 CPUs

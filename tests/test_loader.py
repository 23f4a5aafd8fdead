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

    def build(self, picks: Sequence[tuple[str, int]], layout: Any = None) -> Any:
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
    expected = [picks for _, _, picks, _, _ in plan().picks()]
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
    assert first + resumed == [picks for _, _, picks, _, _ in full]
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


# --------------------------------------------------------------------------- packing by tokens

MAX_TOKENS = 256


def token_plan(rank: int = 0, world: int = 2, **kw: Any) -> Plan:
    """Two packed datasets (lengths 20-120 tokens, 1-2 images) beside a classification one."""
    import numpy as np

    rng = np.random.default_rng(0)
    packed = {
        n: np.stack([rng.integers(20, 121, size), rng.integers(1, 3, size)], 1).astype(np.int32)
        for n, size in (("va", 300), ("vb", 200))
    }
    base = Plan(
        sizes={"va": 300, "vb": 200, "cls": 80},
        weights={"va": 2.0, "vb": 1.0, "cls": 1.0},
        seed=5,
        start_step=0,
        max_steps=40,
        grad_accum=2,
        global_micro=8 * world,
        rank=rank,
        world=world,
        packed=packed,
        pack_rows=2,
        pack_max_tokens=MAX_TOKENS,
        pack_max_images=18,
        buffer_tokens=2 * MAX_TOKENS * world,
    )
    return replace(base, **kw)


def test_token_plan_fills_full_rows_the_same_on_every_rank() -> None:
    """Every rank gets pack_rows rows per micro-batch, filled to 0.95 and more; the ranks'
    picks of a micro-batch are disjoint; each packed sample is drawn once per epoch."""
    plans = [list(token_plan(rank=r).picks()) for r in range(2)]
    lengths = token_plan().packed
    assert lengths is not None
    used = 0
    seen: list[tuple[str, int]] = []
    for items in zip(*plans, strict=True):
        total = {layout.global_samples for *_, layout in items}
        assert len(total) == 1
        everything = [p for _, _, picks, _, _ in items for p in picks]
        assert len(everything) == total.pop() == len(set(everything))
        for _, _, picks, _, layout in items:
            assert layout is not None and len(layout.rows) == 2
            for row in layout.rows:
                tokens = sum(int(lengths[picks[k][0]][picks[k][1]][0]) for k in row)
                assert tokens <= MAX_TOKENS
                used += tokens
        seen += [p for p in everything if p[0] in lengths]
    fill = used / (len(plans[0]) * 2 * 2 * MAX_TOKENS)
    assert fill >= 0.95, fill
    # Drawn once per epoch: what was trained on plus what still waits in the pool is whole
    # epochs of each dataset and a part of the next (counts differ by one at most).
    pending = [(n, i) for n, i in plans[0][-1][3]["pending"]]
    drawn = Counter(seen + pending)
    for name, size in (("va", 300), ("vb", 200)):
        counts = [drawn[(name, i)] for i in range(size)]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1, name


def test_token_plan_resumes_exactly_from_a_saved_position() -> None:
    """Stop after 13 micro-batches (mid-step, with samples waiting in the pool), resume from the
    saved position: the rest is the uninterrupted plan, layouts included."""
    full = list(token_plan(max_steps=20).picks())
    cut = full[13]
    assert cut[3].get("pending")  # the pool is in the position
    step = cut[0]
    assert cut[1] == 1  # the last micro-batch of its step: a checkpoint could be taken here
    resumed = list(token_plan(max_steps=20, start_step=step, position=cut[3]).picks())
    assert [(s, m, p, pos, lay) for s, m, p, pos, lay in resumed] == full[14:]


def test_the_loss_weighs_every_sample_the_same_on_any_rank() -> None:
    import torch

    from workers.train import mean_loss

    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])
    per_rank = [mean_loss(x, 4, world=2) for x in (a, b)]
    assert torch.allclose(sum(per_rank) / 2, torch.tensor(16.0 / 4))  # DeepSpeed's average
    same = torch.tensor([1.0, 2.0])
    assert torch.equal(mean_loss(same, 4, world=2), same.mean())  # equal counts: the mean

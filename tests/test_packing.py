"""orch's streaming packer: every sample exactly once, limits never exceeded, deterministic,
oversize samples never dropped or cut; and the nanoVLM baseline port on a hand-worked case."""

from __future__ import annotations

import random

import pytest

from workers.data.packing import (
    Pack,
    fill_ratio,
    nanovlm_balanced_greedy_knapsack,
    nanovlm_pack,
    pack_stream,
)


def random_stream(seed: int, n: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(1, 300), rng.randint(0, 4)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_every_sample_once_and_limits_hold(seed: int) -> None:
    items = random_stream(seed, 500)
    packs = list(pack_stream(items, 512, 6, buffer_size=1 + seed * 7))
    seen = sorted(i for p in packs for i in p.indices)
    assert seen == list(range(len(items)))
    for p in packs:
        assert p.tokens == sum(items[i][0] for i in p.indices) <= 512
        assert p.images == sum(items[i][1] for i in p.indices) <= 6
    assert packs == list(pack_stream(items, 512, 6, buffer_size=1 + seed * 7))  # deterministic


def test_a_large_buffer_fills_packs() -> None:
    items = random_stream(0, 2000)
    assert fill_ratio(list(pack_stream(items, 512, 100, buffer_size=256)), 512) > 0.97


def test_oversize_is_an_error_or_its_own_flagged_pack() -> None:
    items = [(10, 1), (600, 1), (10, 1)]
    with pytest.raises(ValueError, match="sample 1 has 600 tokens"):
        list(pack_stream(items, 512, 4))
    packs = list(pack_stream(items, 512, 4, oversize="separate"))
    assert Pack((1,), 600, 1, oversize=True) in packs
    assert sorted(i for p in packs for i in p.indices) == [0, 1, 2]
    with pytest.raises(ValueError, match="5 images"):
        list(pack_stream([(10, 5)], 512, 4))


def test_max_images_binds_before_tokens() -> None:
    packs = list(pack_stream([(10, 3)] * 6, 4096, 6))
    assert [p.images for p in packs] == [6, 6, 6]


def test_nanovlm_knapsack_hand_worked() -> None:
    # Sorted 7, 5, 4, 3, 1; ceil(20 / 10) = 2 knapsacks; each item to the least-loaded that fits:
    # 7 -> A(7); 5 -> B(5); 4 -> B(9); 3 -> A(10); 1 -> B(10).
    groups = nanovlm_balanced_greedy_knapsack([5, 3, 7, 1, 4], [1] * 5, 10)
    assert sorted(sorted(g) for g in groups) == [[0, 3, 4], [1, 2]]
    # The image limit sends an item on to the next knapsack.
    groups = nanovlm_balanced_greedy_knapsack([5, 5], [2, 2], 10, max_images_per_knapsack=3)
    assert len(groups) == 2
    # The producer: +1 separator per sample, samples of max_sample_length or more skipped.
    packs = list(nanovlm_pack([(4, 1), (50, 1), (4, 1)], 10, 1, 18, max_sample_length=10))
    assert sorted(i for p in packs for i in p.indices) == [0, 2]

"""Seeded mixing of several datasets, resumable from a small saved position.

Each dataset is walked through its own seeded permutation, epoch after epoch; which dataset each
sample of a global batch comes from is drawn with the mixing weights from a generator seeded by
(seed, step, micro-step). Every rank computes the same global plan and takes its own disjoint
slice, so no coordination is needed. The position (per-dataset epoch and cursor) goes into
every checkpoint: a resumed run continues exactly where the checkpoint left off.

A dataset of up to ``EXACT_MAX`` rows is walked through numpy's permutation of its rows (8 bytes a
row, in every process that plans). A larger one is walked through a ``FeistelPermutation``: also
a seeded permutation of its rows, each sample once per epoch, but computed an index at a time in
constant memory, so that a rank's memory does not grow with the dataset (80 MB per process and
per dataset at ten million rows otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

EXACT_MAX = 1 << 20
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit bijection that scatters every input bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class FeistelPermutation:
    """A seeded permutation of ``range(n)``, one index at a time: a balanced Feistel network of
    ``ROUNDS`` rounds over the smallest even number of bits that holds n (a bijection of that
    power of two), cycle-walked back into range (fewer than 4 steps on average)."""

    ROUNDS = 6

    def __init__(self, n: int, key: list[int]) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        keys = np.random.default_rng(key).integers(0, 2**63, size=self.ROUNDS)
        self.keys = [int(k) for k in keys]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = i
        while True:
            left, right = x >> self.half, x & self.mask
            for k in self.keys:
                left, right = right, left ^ (_mix((right + k) & _M64) & self.mask)
            x = (left << self.half) | right
            if x < self.n:
                return x


@dataclass
class MixturePosition:
    epoch: dict[str, int] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[str, int]] = field(default_factory=list)
    """Drawn, not yet trained on: the samples waiting in the pack pool (training.batch_tokens)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": dict(self.epoch), "cursor": dict(self.cursor)}
        if self.pending:
            out["pending"] = [list(p) for p in self.pending]
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> MixturePosition:
        pending = [(str(n), int(i)) for n, i in value.get("pending", [])]
        return cls(epoch=dict(value["epoch"]), cursor=dict(value["cursor"]), pending=pending)


class MixtureSampler:
    def __init__(
        self,
        sizes: dict[str, int],
        weights: dict[str, float],
        seed: int,
        position: MixturePosition | None = None,
    ) -> None:
        self.names = sorted(sizes)
        self.sizes = sizes
        total = sum(weights[n] for n in self.names)
        self.probs = np.array([weights[n] / total for n in self.names])
        self.seed = seed
        self.pos = position or MixturePosition(
            epoch={n: 0 for n in self.names}, cursor={n: 0 for n in self.names}
        )
        self._perms: dict[str, tuple[int, np.ndarray | FeistelPermutation]] = {}

    def _perm(self, name: str, epoch: int) -> np.ndarray | FeistelPermutation:
        cached = self._perms.get(name)
        if cached is None or cached[0] != epoch:
            key, n = [self.seed, self.names.index(name), epoch], self.sizes[name]
            perm = (
                np.random.default_rng(key).permutation(n)
                if n <= EXACT_MAX
                else FeistelPermutation(n, key)
            )
            self._perms[name] = cached = (epoch, perm)
        return cached[1]

    def _take(self, name: str) -> int:
        perm = self._perm(name, self.pos.epoch[name])
        index = int(perm[self.pos.cursor[name]])
        self.pos.cursor[name] += 1
        if self.pos.cursor[name] == self.sizes[name]:
            self.pos.epoch[name] += 1
            self.pos.cursor[name] = 0
        return index

    def global_batch(self, step: int, micro: int, size: int) -> list[tuple[str, int]]:
        """The (dataset, index) pairs of one global micro-batch; advances the position."""
        return self.draw([step, micro], size)

    def draw(self, key: list[int], size: int) -> list[tuple[str, int]]:
        """``size`` (dataset, index) pairs, the datasets drawn with the weights from a generator
        seeded by (seed, *key); advances the position."""
        rng = np.random.default_rng([self.seed, *key])
        picks = rng.choice(len(self.names), size=size, p=self.probs)
        return [(self.names[i], self._take(self.names[i])) for i in picks]


def rank_slice(items: list[tuple[str, int]], rank: int, world: int) -> list[tuple[str, int]]:
    return items[rank::world]

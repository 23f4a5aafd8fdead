"""Seeded mixing of several datasets, resumable from a small saved position.

Each dataset is walked through its own seeded permutation, epoch after epoch; which dataset each
sample of a global batch comes from is drawn with the mixing weights from a generator seeded by
(seed, step, micro-step). Every rank computes the same global plan and takes its own disjoint
slice, so no coordination is needed. The position (per-dataset epoch and cursor) goes into
every checkpoint: a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MixturePosition:
    epoch: dict[str, int] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"epoch": dict(self.epoch), "cursor": dict(self.cursor)}

    @classmethod
    def from_json(cls, value: dict[str, dict[str, int]]) -> MixturePosition:
        return cls(epoch=dict(value["epoch"]), cursor=dict(value["cursor"]))


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
        self._perms: dict[str, tuple[int, np.ndarray]] = {}

    def _perm(self, name: str, epoch: int) -> np.ndarray:
        cached = self._perms.get(name)
        if cached is None or cached[0] != epoch:
            idx = self.names.index(name)
            perm = np.random.default_rng([self.seed, idx, epoch]).permutation(self.sizes[name])
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
        rng = np.random.default_rng([self.seed, step, micro])
        picks = rng.choice(len(self.names), size=size, p=self.probs)
        return [(self.names[i], self._take(self.names[i])) for i in picks]


def rank_slice(items: list[tuple[str, int]], rank: int, world: int) -> list[tuple[str, int]]:
    return items[rank::world]

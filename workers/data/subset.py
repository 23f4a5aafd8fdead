"""The seeded, stratified eval subset every kind draws its partial evals from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def stratified(rows: Sequence[T], ratio: float, seed: int, key: Callable[[T], Any]) -> list[T]:
    """``ratio`` of the rows, the same share of every stratum (``key``: the class label, the
    reference answer ...), at least one row each, drawn with ``seed``; all rows when ratio is 1.
    Strata hold row numbers, not rows: over an index (workers/data/index.py) only the chosen rows
    are kept."""
    if ratio >= 1.0:
        return list(rows)
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(key(r), []).append(i)
    chosen: list[T] = []
    for stratum in sorted(groups):
        group = groups[stratum]
        k = max(1, round(len(group) * ratio))
        chosen.extend(rows[group[i]] for i in sorted(rng.choice(len(group), size=k, replace=False)))
    return chosen

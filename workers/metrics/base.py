"""What every metric module shares: the (value, stderr, n) triple, lmms-eval's mean and standard
error, and the argument checks (empty inputs and mismatched lengths raise, never a silent 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    value: float
    stderr: float
    n: int


def mean_with_stderr(scores: Sequence[float]) -> Metric:
    """lmms-eval api/metrics.py ``mean`` and ``mean_stderr`` (``sample_stddev`` / sqrt(n)).

    One sample has a stderr of 0.0 here (lmms-eval reports "N/A"); none raises ValueError."""
    n = len(scores)
    if n == 0:
        raise ValueError("no samples: a metric over nothing is undefined")
    xs = [float(x) for x in scores]
    mean = sum(xs) / n
    if n < 2:
        return Metric(mean, 0.0, n)
    sample_stddev = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Metric(mean, sample_stddev / math.sqrt(n), n)


def same_length(a: Sequence[object], b: Sequence[object], what: str = "references") -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} {what}")


def as_references(ref: str | Sequence[str]) -> list[str]:
    """One reference or several, as a non-empty list."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    if not refs:
        raise ValueError("a sample without any reference answer")
    return refs

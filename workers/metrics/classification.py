"""Classification metrics: accuracy, loss, top-k and per-class accuracy."""

from __future__ import annotations

from collections.abc import Sequence

from workers.metrics.base import Metric, mean_with_stderr, same_length


def accuracy(correct: Sequence[bool]) -> Metric:
    return mean_with_stderr([float(c) for c in correct])


def mean_loss(losses: Sequence[float]) -> Metric:
    return mean_with_stderr(losses)


def top_k_accuracy(ranked_preds: Sequence[Sequence[int]], labels: Sequence[int], k: int) -> Metric:
    """1 for a sample whose label is among its first ``k`` ranked predictions."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    same_length(ranked_preds, labels, "labels")
    hits = [float(y in list(r)[:k]) for r, y in zip(ranked_preds, labels, strict=True)]
    return mean_with_stderr(hits)


def per_class_accuracy(labels: Sequence[int], preds: Sequence[int]) -> dict[int, float]:
    """Accuracy over the samples of each label present, keyed by label in ascending order."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    if not labels:
        raise ValueError("no samples: a metric over nothing is undefined")
    hits: dict[int, list[bool]] = {}
    for y, p in zip(labels, preds, strict=True):
        hits.setdefault(y, []).append(y == p)
    return {y: sum(h) / len(h) for y, h in sorted(hits.items())}

"""The metric registry: what a metric means, declared once, used by both planes.

A metric turns each evaluated sample's record (a dict the dataset kind writes: ``correct``,
``loss``, ``prediction``, ``reference`` ...) into a score, and aggregates the scores of a
dataset into one value with its standard error. The control plane reads only the declaration
(``higher_is_better``, ``aggregation``) to merge, choose the best checkpoint and name tracker
keys; the data plane calls ``score``. Registering a metric is one call::

    register_metric(Metric("mse", score=lambda r: (r["prediction"] - r["target"]) ** 2,
                           higher_is_better=False, needs=frozenset({"prediction", "target"})))
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.contract.errors import SpecError

SampleRecord = Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """A named metric. ``score`` maps one sample record to a float; ``aggregation`` says how a
    dataset's scores become one value (``mean``: the mean, with the standard error of the mean,
    unless ``aggregate`` is given), and how datasets combine into ``overall`` (weighted by their
    sample counts)."""

    name: str
    score: Callable[[SampleRecord], float]
    higher_is_better: bool
    needs: frozenset[str] = field(default_factory=frozenset)
    """Fields of the sample record the score reads (checked against the kind's records)."""
    aggregation: Literal["mean"] = "mean"
    description: str = ""
    aggregate: Callable[[Sequence[SampleRecord]], MetricValue] | None = None
    """A dataset's value from all its records, for a benchmark score that is not the mean of
    ``score`` (MME's sums over image pairs and categories, MMBench's circular groups); None: the
    mean of ``score``. Datasets still combine into ``overall`` by ``aggregation``."""


@dataclass(frozen=True)
class MetricValue:
    value: float
    stderr: float
    n: int


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric; registering the same name twice with another definition is an error."""
    known = _REGISTRY.get(metric.name)
    if known is not None and known != metric:
        raise ValueError(f"metric {metric.name!r} is already registered differently")
    _REGISTRY[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    from orchestrator.contract.plugins import load_plugins

    load_plugins()  # orch's own metrics, in any process
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(_REGISTRY)) or 'none'}"
        ) from None


def known_metrics() -> dict[str, Metric]:
    from orchestrator.contract.plugins import load_plugins

    load_plugins()
    return dict(_REGISTRY)


def mean_with_stderr(scores: Sequence[float]) -> MetricValue:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)), as lmms-eval's
    ``mean_stderr``; the stderr of one sample is 0, of none NaN."""
    n = len(scores)
    if n == 0:
        return MetricValue(math.nan, math.nan, 0)
    mean = math.fsum(scores) / n
    stderr = statistics.stdev(scores) / math.sqrt(n) if n > 1 else 0.0
    return MetricValue(mean, stderr, n)


def aggregate(metric: Metric, records: Iterable[SampleRecord]) -> MetricValue:
    """One dataset's value of ``metric`` over its sample records: ``metric.aggregate`` of them
    when the metric has one, else the mean of their scores."""
    if metric.aggregate is not None:
        return metric.aggregate(list(records))
    return mean_with_stderr([float(metric.score(r)) for r in records])


def combine(values: Iterable[MetricValue]) -> MetricValue:
    """Datasets into one overall value: weighted by their sample counts (each evaluated sample
    counts once); the stderr of a weighted mean of independent means."""
    rows = [v for v in values if v.n > 0 and not math.isnan(v.value)]
    n = sum(v.n for v in rows)
    if n == 0:
        return MetricValue(math.nan, math.nan, 0)
    value = math.fsum(v.value * v.n for v in rows) / n
    var = math.fsum((v.n * (0.0 if math.isnan(v.stderr) else v.stderr)) ** 2 for v in rows)
    return MetricValue(value, math.sqrt(var) / n, n)

"""`orch data prepare <benchmark>`: the evaluation sets lmms-eval uses, kept offline as Parquet
files or ``save_to_disk`` folders, converted into orch manifests and images.

One module per benchmark family declares its benchmarks (``common.Benchmark``): multiple-choice
(MMBench, MMStar, ScienceQA) and MMMU become rows of the ``mcq`` kind; TextVQA, DocVQA,
InfographicVQA, ChartQA, OCRBench, MME (and MMMU's open questions) rows of the ``vqa`` kind.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.contract.errors import DataError
from workers.data.benchmarks.common import Benchmark
from workers.data.benchmarks.convert import PreparedBenchmark, Table, prepare
from workers.data.benchmarks.mmmu import MMMU
from workers.data.benchmarks.multiple_choice import MMBENCH, MMSTAR, SCIENCEQA
from workers.data.benchmarks.vqa import CHARTQA, DOCVQA, INFOVQA, MME, OCRBENCH, TEXTVQA

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (MMBENCH, MMMU, MMSTAR, SCIENCEQA, TEXTVQA, DOCVQA, INFOVQA, CHARTQA, OCRBENCH, MME)
}

__all__ = ["BENCHMARKS", "PreparedBenchmark", "Table", "prepare_benchmark"]


def prepare_benchmark(
    benchmark: str,
    src: Path,
    out: Path,
    name: str,
    *,
    split: str | None = None,
    fmt: str = "jsonl",
    max_samples: int | None = None,
) -> PreparedBenchmark:
    """Convert ``split`` (default: the one lmms-eval evaluates) of ``benchmark`` from ``src``."""
    bench = BENCHMARKS.get(benchmark)
    if bench is None:
        raise DataError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    return prepare(bench, src, out, name, split=split, fmt=fmt, max_samples=max_samples)

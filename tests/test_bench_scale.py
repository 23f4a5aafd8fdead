"""The scale benchmarks' quick modes (bench/train_rss.py, bench/train_pack_fill.py) run to their
end and print their figures; each also checks the property it measures, which is a count, not a
speed: a process reading training's rows does not grow with the manifest, and training's packed
rows are full. Both quick modes use training's own data path (the index, the plan, the loader,
the collators) without a run; the full modes (`make bench`) submit the jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bench import check_numbers, run_bench

pytestmark = pytest.mark.slow


def test_train_rss_quick(demo_data: Path, tiny_model: Path) -> None:
    """200,000 rows against 10,000: the rows are in the index, not in the process (a list of
    rows would add ~110 MB, 0.56 KB a row)."""
    proc = run_bench(
        "train_rss.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    values = check_numbers(
        proc,
        [
            "train_rss_loader_mb_10k",
            "train_rss_loader_mb_200k",
            "train_rss_loader_ratio",
            "index_build_rows_per_s",
        ],
    )
    assert values["train_rss_loader_ratio"] < 1.10, proc.stdout
    assert values["index_build_rows_per_s"] > 0


def test_train_pack_fill_quick(demo_data: Path, tiny_model: Path) -> None:
    """jobs/demo_vqa.toml as shipped (training.batch_tokens) fills its rows to 0.95 and more;
    the baseline (batch_size samples packed among themselves) is printed beside it."""
    proc = run_bench(
        "train_pack_fill.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    values = check_numbers(
        proc,
        [
            "train_pack_fill",
            "train_pack_budget_fill",
            "train_pack_fill_baseline",
            "train_pack_budget_fill_baseline",
            "train_pack_fill_ratio",
            "train_samples_per_step_tokens",
            "train_samples_per_step_count",
        ],
    )
    assert values["train_pack_fill"] >= 0.95, proc.stdout
    assert values["train_pack_budget_fill"] >= 0.95, proc.stdout

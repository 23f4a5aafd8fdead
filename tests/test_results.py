"""Merging and best-model choice are pure functions over values; no metric is hard-coded."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.contract.records import SCHEMA_VERSION, MergedStep, PartRecord
from orchestrator.core.merge import choose_best, flat_metrics, merge_parts

ROOT = Path(__file__).resolve().parents[1]


def part(step: int, loss: float, correct: int, n: int, **extra: float) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "step": step,
        "metrics": {"loss": loss, "accuracy": correct / n, **extra},
        "stderr": {"loss": 0.1, "accuracy": 0.05},
        "n": n,
    }


def test_merge_weights_by_n_and_keeps_inputs() -> None:
    parts = {"a": part(100, 0.5, 90, 100), "b": part(100, 2.0, 5, 10)}
    before = copy.deepcopy(parts)
    merged = merge_parts(100, parts, ["a", "b"], partial=True)
    assert parts == before
    assert merged["overall"]["n"] == 110
    assert merged["overall"]["accuracy"] == pytest.approx(95 / 110)
    assert merged["overall"]["loss"] == pytest.approx((0.5 * 100 + 2.0 * 10) / 110)
    b = merged["datasets"]["b"]
    assert (b["loss"], b["accuracy"], b["n"]) == (2.0, 0.5, 10)
    assert b["stderr"] == {"loss": 0.1, "accuracy": 0.05}
    # the stderr of the weighted mean of two independent means
    expected = math.sqrt((100 * 0.05) ** 2 + (10 * 0.05) ** 2) / 110
    assert merged["overall"]["stderr"]["accuracy"] == pytest.approx(expected)
    assert merged["missing"] == {} and merged["partial"] is True
    assert merged["schema"] == SCHEMA_VERSION


def test_overall_is_weighted_over_the_datasets_that_report_the_metric() -> None:
    parts = {
        "a": part(1, 0.5, 9, 10, exact_match=0.25),
        "b": part(1, 1.0, 1, 30),  # reports no exact_match
    }
    merged = merge_parts(1, parts, ["a", "b"], partial=True, metrics=["accuracy", "anls"])
    o = merged["overall"]
    assert o["exact_match"] == pytest.approx(0.25)  # a alone, not diluted by b's n
    assert o["n_by_metric"] == {"accuracy": 40, "loss": 40, "exact_match": 10, "anls": 0}
    assert math.isnan(o["anls"])  # declared, reported by none: undefined, never 0
    assert o["accuracy"] == pytest.approx(10 / 40)


def test_merge_lists_missing_parts_with_reasons() -> None:
    merged = merge_parts(
        5,
        {"a": part(5, 1.0, 1, 2)},
        ["a", "b", "c"],
        partial=True,
        failed={"b": "exit code 1: boom"},
    )
    assert merged["missing"] == {"b": "exit code 1: boom", "c": "no result"}
    assert merged["overall"]["n"] == 2


def test_merge_rejects_a_part_of_another_step() -> None:
    with pytest.raises(ValueError, match="part a is for step 7, not 5"):
        merge_parts(5, {"a": part(7, 1.0, 1, 2)}, ["a"], partial=True)


def test_empty_merge_is_nan_not_zero() -> None:
    merged = merge_parts(1, {}, ["a"], partial=True, metrics=["accuracy"])
    assert math.isnan(merged["overall"]["accuracy"])


def steps() -> list[dict]:
    return [
        merge_parts(
            10, {"a": part(10, 1.0, 5, 10), "b": part(10, 1.0, 5, 10)}, ["a", "b"], partial=True
        ),
        merge_parts(
            20, {"a": part(20, 0.4, 9, 10), "b": part(20, 2.0, 2, 10)}, ["a", "b"], partial=True
        ),
        merge_parts(
            30, {"a": part(30, 0.6, 8, 10), "b": part(30, 0.9, 6, 10)}, ["a", "b"], partial=True
        ),
        # Step 40 has the best number for `a` but is missing `b`: not eligible.
        merge_parts(40, {"a": part(40, 0.1, 10, 10)}, ["a", "b"], partial=True),
    ]


def test_choose_best_by_metric_and_mode() -> None:
    best = choose_best(steps(), "overall", "accuracy", "max")
    assert best is not None and best.step == 30  # 14/20 beats 11/20
    assert best.metric == "overall_accuracy" and best.value == pytest.approx(0.7)
    assert choose_best(steps(), "a", "accuracy", "max").step == 20  # type: ignore[union-attr]
    assert choose_best(steps(), "overall", "loss", "min").step == 30  # type: ignore[union-attr]
    assert choose_best(steps(), "b", "loss", "min").step == 30  # type: ignore[union-attr]
    assert choose_best([], "overall", "accuracy", "max") is None


def test_ties_keep_the_earlier_step() -> None:
    s = steps()
    s.append(
        merge_parts(
            50, {"a": part(50, 0.6, 8, 10), "b": part(50, 0.9, 6, 10)}, ["a", "b"], partial=True
        )
    )
    assert choose_best(s, "overall", "accuracy", "max").step == 30  # type: ignore[union-attr]


def test_flat_metrics_keys() -> None:
    flat = flat_metrics(steps()[0])
    assert flat["overall/accuracy"] == 0.5 and flat["a/n"] == 10.0 and "b/loss" in flat
    assert not any("stderr" in k for k in flat)  # stderrs are not metrics


def test_schema_1_records_still_read() -> None:
    """Runs written before the metric registry (schema 1) read back: parts kept breakdowns
    among their metrics and merged blocks carried "correct" counts."""
    old_part = {
        "schema": 1,
        "step": 10,
        "dataset": "digits",
        "n": 4,
        "correct": 3,
        "metrics": {"loss": 0.2, "accuracy": 0.75, "per_class_accuracy": {"0": 1.0}},
        "stderr": {"accuracy": 0.25},
    }
    p = PartRecord.from_json(old_part)
    assert p.scores.values == {"loss": 0.2, "accuracy": 0.75} and p.kind == "classification"
    old_merged = {
        "schema": 1,
        "step": 10,
        "partial": True,
        "datasets": {"digits": {"loss": 0.2, "accuracy": 0.75, "n": 4, "correct": 3}},
        "overall": {"loss": 0.2, "accuracy": 0.75, "n": 4, "correct": 3},
        "missing": {},
    }
    m = MergedStep.from_json(old_merged)
    assert m.value("digits", "accuracy") == 0.75 and m.overall.values == {
        "loss": 0.2,
        "accuracy": 0.75,
    }
    assert choose_best([old_merged], "overall", "accuracy", "max").step == 10  # type: ignore[union-attr]


def orch_results(*args: str) -> subprocess.CompletedProcess[str]:
    """`orch results` as a user types it (its own process: its logging stays its own)."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "results", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_orch_results_reads_a_run_written_before_metrics_were_declared(tmp_path: Path) -> None:
    """A schema-1 run directory (as orch wrote it before the metric registry) through the
    `orch results` command: same numbers, the JSON shape extended, not broken."""
    run = tmp_path / "runs" / "old-run"
    (run / "eval").mkdir(parents=True)
    (run / "spec.json").write_text("{}")
    block = {"loss": 0.5, "accuracy": 0.75, "n": 8, "correct": 6}
    merged = {"schema": 1, "step": 10, "partial": True, "datasets": {"digits": block},
              "overall": block, "missing": {}}  # fmt: skip
    (run / "eval" / "step_000010.json").write_text(json.dumps(merged))
    (run / "eval" / "final.json").write_text(json.dumps(merged | {"partial": False}))
    best = {"step": 10, "metric": "overall_accuracy", "value": 0.75, "mode": "max"}
    (run / "best.json").write_text(json.dumps(best))
    proc = orch_results(str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    step = out["steps"][0]
    assert step["datasets"]["digits"]["accuracy"] == 0.75 and step["overall"]["loss"] == 0.5
    assert step["datasets"]["digits"]["n"] == 8 and out["best"]["step"] == 10
    assert out["final"]["partial"] is False
    proc = orch_results(str(run))
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout  # without a spec, a dataset's first metric is its primary one
    assert "digits" in table and "0.7500" in table and "0.5000" not in table
    every = orch_results(str(run), "--all")
    assert every.returncode == 0 and "0.7500" in every.stdout and "0.5000" in every.stdout


def bench_suite_run(tmp_path: Path) -> Path:
    """A run of jobs/bench_suite.toml (eleven benchmark datasets, their declared metrics) with
    two merged steps and a final, laid out as the controller writes them."""
    import tomli_w

    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import load_spec

    spec = load_spec(ROOT / "jobs" / "bench_suite.toml")
    resolved = spec.to_toml_dict()
    rundir = RunDir(tmp_path / "runs" / "suite")
    rundir.create(tomli_w.dumps(resolved), resolved)

    def merged(step: int, partial: bool) -> dict:
        datasets = {}
        for k, d in enumerate(spec.datasets):
            metrics = [*spec.declared_metrics(d), "loss"]
            values = {m: round(0.1 + 0.05 * k + step / 10_000 + 0.001 * i, 4)
                      for i, m in enumerate(metrics)}  # fmt: skip
            datasets[d] = {**values, "n": 100, "stderr": {m: 0.01 for m in metrics}}
        overall_metrics = sorted({m for b in datasets.values() for m in b} - {"n", "stderr"})
        overall = {m: 0.5 for m in overall_metrics} | {"n": 1100, "stderr": {}}
        return {"schema": SCHEMA_VERSION, "step": step, "partial": partial,
                "datasets": datasets, "overall": overall, "missing": {}}  # fmt: skip

    for step in (100, 200):
        (rundir.eval_dir / f"step_{step:06d}.json").write_text(json.dumps(merged(step, True)))
    rundir.final.write_text(json.dumps(merged(200, False)))
    rundir.best.write_text(json.dumps({"step": 200, "metric": "overall_anls", "value": 0.5,
                                       "mode": "max"}))  # fmt: skip
    return rundir.path


def test_ten_benchmarks_read_in_a_100_column_terminal(tmp_path: Path) -> None:
    run = bench_suite_run(tmp_path)
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "results", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, proc.stdout
    assert "…" not in proc.stdout, proc.stdout  # no value or name cut short
    # Each dataset's primary metric (its first declared one), and no other.
    out = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env,
                                    timeout=120).stdout)  # fmt: skip
    assert out["primary"]["docvqa"] == "anls" and out["primary"]["textvqa"] == "vqa_accuracy"
    assert out["primary"]["mme"] == "mme_perception"
    final = out["final"]["datasets"]
    for name, metric in out["primary"].items():
        assert f"{final[name][metric]:.4f}" in proc.stdout, (name, metric)
    assert f"{final['mme']['mme_cognition']:.4f}" not in proc.stdout  # not primary: not shown

    # --metric: that metric wherever it is reported; the JSON still carries every metric.
    anls = subprocess.run([*cmd, "--metric", "anls"], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert anls.returncode == 0, anls.stderr
    assert "docvqa" in anls.stdout and "infovqa" in anls.stdout and "mmbench" not in anls.stdout
    assert set(final["mme"]) >= {"mme_perception", "mme_cognition", "mme_accuracy_plus"}
    wrong = subprocess.run([*cmd, "--metric", "bleu"], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
    assert wrong.returncode == 2 and "no dataset reports 'bleu'" in wrong.stderr
    assert "anls" in wrong.stderr  # the metrics there are

    # --plot: one panel per metric.
    plot = subprocess.run([*cmd, "--plot"], capture_output=True, text=True, env=env, timeout=120)
    assert plot.returncode == 0, plot.stderr
    from PIL import Image

    with Image.open(run / "results.png") as im:
        width, height = im.size
    assert height > width / 3 * 2  # several rows of panels for the suite's many metrics

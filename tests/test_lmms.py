"""lmms-eval results imported as eval parts: merged into their step and logged on the same
wandb eval axis, by the controller or, when none runs, by the importer itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import DataError
from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import validate_spec
from orchestrator.core.lmms_import import parse_results
from orchestrator.launch.submit import lock_run
from orchestrator.tracking import find_offline_runs, read_offline_run

# The shape lmms-eval (0.3+) writes to <model>/<date>_results.json, trimmed.
LMMS_RESULTS = {
    "results": {
        "docvqa_val": {"alias": "docvqa_val", "anls,none": 0.8123, "anls_stderr,none": 0.0051},
        "chartqa": {
            "alias": "chartqa",
            "relaxed_overall,none": 0.7, "relaxed_overall_stderr,none": "N/A",
            "relaxed_human_split,none": 0.6, "relaxed_human_split_stderr,none": 0.01,
        },
    },
    "n-samples": {"docvqa_val": {"original": 5349, "effective": 5349},
                  "chartqa": {"original": 2500, "effective": 100}},
    "higher_is_better": {"docvqa_val": {"anls": True}},
    "config": {"model": "qwen2_5_vl", "model_args": "pretrained=/ckpt/hf"},
}  # fmt: skip


def test_parse_keeps_metrics_stderr_and_n(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(LMMS_RESULTS))
    tasks = parse_results(path)
    assert tasks["docvqa_val"] == {
        "metrics": {"anls": 0.8123},
        "stderr": {"anls": 0.0051},
        "n": 5349,
    }
    assert tasks["chartqa"]["metrics"] == {"relaxed_overall": 0.7, "relaxed_human_split": 0.6}
    assert tasks["chartqa"]["stderr"] == {"relaxed_human_split": 0.01}  # "N/A" is not a number
    assert tasks["chartqa"]["n"] == 100


def test_parse_keeps_stderr_variants_out_of_the_metrics(tmp_path: Path) -> None:
    # lmms-eval 0.7 writes METRIC_stderr and METRIC_stderr_clt (and other estimates) per filter.
    raw = {
        "results": {"mmstar": {
            "alias": "mmstar", "average,none": 0.41, "average_stderr,none": 0.012,
            "average_stderr_clt,none": 0.013, "exact_match,flexible-extract": 0.5,
            "exact_match_stderr,flexible-extract": 0.05,
            "exact_match_stderr_clustered,flexible-extract": 0.07,
        }},
        "n-samples": {"mmstar": {"original": 1500, "effective": 100}},
    }  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(raw))
    task = parse_results(path)["mmstar"]
    assert task["metrics"] == {"average": 0.41, "exact_match/flexible-extract": 0.5}
    assert task["stderr"] == {"average": 0.012, "exact_match/flexible-extract": 0.05}
    assert task["stderr_variants"] == {
        "average": {"clt": 0.013}, "exact_match/flexible-extract": {"clustered": 0.07}
    }  # fmt: skip


def test_parse_rejects_what_is_not_an_lmms_results_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"foo": 1}))
    with pytest.raises(DataError, match="expected an lmms-eval results file"):
        parse_results(path)


def make_run(tmp_path: Path, tracking: str) -> RunDir:
    spec = validate_spec({
        "name": "t", "runs_dir": str(tmp_path), "model": {"path": str(tmp_path)},
        "datasets": {"a": {"train": "x", "eval": "x", "num_classes": 2}},
        "training": {"max_steps": 20}, "tracking": {"mode": tracking},
    })  # fmt: skip
    rundir = RunDir(tmp_path / "run")
    rundir.create("", spec.to_toml_dict())
    for step in (10, 20):
        d = ckpt.checkpoint_dir(rundir.checkpoints, step)
        d.mkdir(parents=True)
        atomic_write_json(d / ckpt.COMPLETE, {"step": step})
        merged = {"schema": 1, "step": step, "partial": True, "missing": {},
                  "datasets": {"a": {"loss": 0.5, "accuracy": 0.8, "n": 10, "correct": 8}},
                  "overall": {"loss": 0.5, "accuracy": 0.8, "n": 10, "correct": 8}}  # fmt: skip
        atomic_write_json(rundir.merged(step), merged)
    return rundir


def test_import_into_a_finished_run_publishes_on_the_eval_axis(tmp_path: Path) -> None:
    rundir = make_run(tmp_path, "offline")
    results = tmp_path / "qwen_results.json"
    results.write_text(json.dumps(LMMS_RESULTS))
    before = results.read_text()
    assert main(["import-lmms", str(rundir.path), str(results), "--step", "20"]) == 0
    assert results.read_text() == before  # inputs are never modified
    merged = json.loads(rundir.merged(20).read_text())
    assert merged["tasks"]["docvqa_val"]["metrics"] == {"anls": 0.8123}
    assert merged["datasets"]["a"]["accuracy"] == 0.8  # orch's own results untouched
    wb = read_offline_run(find_offline_runs(rundir.wandb_dir)[-1])
    rows = [r for r in wb.history if "eval/tasks/docvqa_val/anls" in r]
    assert len(rows) == 1 and rows[0]["eval/step"] == 20
    # Importing again publishes nothing new: each imported part is published once.
    assert main(["import-lmms", str(rundir.path), str(results), "--step", "20"]) == 0
    history = [r for f in find_offline_runs(rundir.wandb_dir) for r in read_offline_run(f).history]
    assert len([r for r in history if "eval/tasks/docvqa_val/anls" in r]) == 1


def test_import_while_a_controller_runs_leaves_publishing_to_it(tmp_path: Path) -> None:
    from orchestrator.core.controller import Controller
    from orchestrator.tracking import MemoryTracker
    from tests.helpers.fakes import FakeBackend, FakeTraining

    rundir = make_run(tmp_path, "disabled")
    results = tmp_path / "r.json"
    results.write_text(json.dumps(LMMS_RESULTS))
    held = lock_run(rundir)  # a live controller holds the run
    try:
        assert main(["import-lmms", str(rundir.path), str(results), "--step", "10"]) == 0
        assert "tasks" not in json.loads(rundir.merged(10).read_text())
        spec = validate_spec(json.loads(rundir.spec_json.read_text()))
        tracker = MemoryTracker()
        c = Controller(spec, rundir, FakeBackend(), tracker, FakeTraining(), poll_s=0)
        c.iterate()
    finally:
        held.close()
    assert json.loads(rundir.merged(10).read_text())["tasks"]["chartqa"]["n"] == 100
    assert (10, {"tasks/docvqa_val/anls": 0.8123, "tasks/chartqa/relaxed_overall": 0.7,
                 "tasks/chartqa/relaxed_human_split": 0.6}) in tracker.eval  # fmt: skip


def test_import_for_a_step_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    rundir = make_run(tmp_path, "disabled")
    results = tmp_path / "r.json"
    results.write_text(json.dumps(LMMS_RESULTS))
    assert main(["import-lmms", str(rundir.path), str(results), "--step", "15"]) == 2

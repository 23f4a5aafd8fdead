"""lmms-eval tasks as eval parts ([evaluation.lmms]): real lmms-eval 0.7.3 in its own
environment (.venv-lmms, `make lmms`) on checkpoints of real runs, over the test tasks of
tests/lmms_tasks (a VQA task scored by exact match and ANLS, a multiple-choice task scored through
lmms-eval's own answer extraction, a task that crashes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import SpecError
from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import load_spec, validate_spec
from orchestrator.core.merge import choose_best, flat_metrics, merge_parts
from orchestrator.tracking import find_offline_runs, read_offline_run
from tests.helpers.cli import only_run, orch
from tests.helpers.jobs import demo_job
from tests.helpers.lmms import lmms_cli, lmms_cli_env, make_lmms_tasks, require_lmms
from tests.helpers.paths import ROOT
from workers.lmms.part import LmmsPartError, read_results


@pytest.fixture(scope="module")
def lmms_tasks(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    return make_lmms_tasks(demo_data, tmp_path_factory.mktemp("lmms"))


def spec_with(tmp_path: Path, lmms: dict[str, Any], **best: Any) -> Any:
    raw: dict[str, Any] = {
        "name": "t", "runs_dir": str(tmp_path), "model": {"path": str(tmp_path)},
        "datasets": {"a": {"train": "x", "eval": "x", "num_classes": 2}},
        "training": {"max_steps": 20}, "evaluation": {"lmms": lmms},
    }  # fmt: skip
    if best:
        raw["best"] = best
    return validate_spec(raw)


# ------------------------------------------------------------------------------ no lmms-eval


def test_each_task_is_a_part_of_every_checkpoint(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, {"tasks": ["mmstar", "textvqa_val"], "limit": 50})
    assert spec.part_names == ("a", "lmms.mmstar", "lmms.textvqa_val")
    assert spec.evaluation.lmms.python == Path(".venv-lmms/bin/python")
    with pytest.raises(SpecError, match="pretrained is set by orch"):
        spec_with(tmp_path, {"tasks": ["mmstar"], "model_args": {"pretrained": "x"}})
    with pytest.raises(SpecError, match="listed twice"):
        spec_with(tmp_path, {"tasks": ["mmstar", "mmstar"]})
    with pytest.raises(SpecError, match=r"evaluation\.lmms\.tasks"):
        spec_with(tmp_path, {"tasks": ["mmstar"]}, metric="tasks/mme/total", mode="max")
    with pytest.raises(SpecError, match=r"set best\.mode"):
        spec_with(tmp_path, {"tasks": ["mmstar"]}, metric="tasks/mmstar/average")
    assert spec_with(tmp_path, {"tasks": ["mmstar"]}, metric="tasks/mmstar/average",
                     mode="max").best_target() == ("tasks/mmstar", "average")  # fmt: skip


def lmms_part(step: int, value: float) -> dict[str, Any]:
    block = {"metrics": {"anls": value}, "stderr": {"anls": 0.1}, "n": 8}
    return {"schema": 2, "step": step, "dataset": "lmms.vqa", "kind": "lmms", "task": "vqa",
            "n": 8, "metrics": block["metrics"], "stderr": block["stderr"],
            "tasks": {"vqa": block}}  # fmt: skip


def test_task_parts_merge_under_tasks_and_can_choose_the_best(tmp_path: Path) -> None:
    a = {"schema": 2, "step": 10, "dataset": "a", "kind": "classification", "n": 4,
         "metrics": {"accuracy": 0.5}, "stderr": {}}  # fmt: skip
    steps = [
        merge_parts(
            s, {"a": {**a, "step": s}, "lmms.vqa": lmms_part(s, v)}, ["a", "lmms.vqa"], partial=True
        )
        for s, v in ((10, 0.2), (20, 0.6), (30, 0.4))
    ]
    first = steps[0]
    assert first["tasks"]["vqa"]["metrics"] == {"anls": 0.2}
    assert first["overall"]["n"] == 4  # a task is not one of the datasets of ``overall``
    flat = flat_metrics(first)
    assert flat["tasks/vqa/anls"] == 0.2 and flat["tasks/vqa/n"] == 8
    best = choose_best(steps, "tasks/vqa", "anls", "max", name="tasks/vqa/anls")
    assert best is not None and (best.step, best.value) == (20, 0.6)
    # A task without a result is missing, as a dataset would be: that step cannot be the best.
    why = {"lmms.vqa": "lmms-eval vqa exited 1: ValueError: boom"}
    missing = merge_parts(40, {"a": {**a, "step": 40}}, ["a", "lmms.vqa"], partial=True,
                          failed=why)  # fmt: skip
    assert missing["missing"] == why


def results_dir(tmp_path: Path, results: dict[str, Any], logged: int) -> Path:
    raw = {"results": results, "n-samples": {"vqa": {"original": 8, "effective": 8}},
           "orch": {"samples_per_task": {"vqa": logged}}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(raw))
    return tmp_path


def test_a_part_succeeds_only_when_its_results_are_there_and_complete(tmp_path: Path) -> None:
    good = {"vqa": {"alias": "vqa", "anls,none": 0.5}}
    assert read_results(results_dir(tmp_path, good, 8), "vqa", None, [])["results"] == good
    with pytest.raises(LmmsPartError, match=r"no result for task vqa.*ValueError: boom"):
        read_results(results_dir(tmp_path, {}, 8), "vqa", None, ["x", "ValueError: boom"])
    with pytest.raises(LmmsPartError, match="8 documents evaluated but 5 samples logged"):
        read_results(results_dir(tmp_path, good, 5), "vqa", None, [])
    with pytest.raises(LmmsPartError, match="8 documents evaluated, expected 4"):
        read_results(results_dir(tmp_path, good, 8), "vqa", 4, [])
    with pytest.raises(LmmsPartError, match="wrote no results"):
        read_results(tmp_path / "nothing", "vqa", None, [])


# ------------------------------------------------------------------------------ real lmms-eval


def test_doctor_says_whether_lmms_eval_can_run_the_tasks(
    tmp_path: Path, demo_data: Path, tiny_model: Path, lmms_tasks: Path
) -> None:
    from orchestrator.checks.doctor import check_lmms

    require_lmms()
    job = demo_job(tmp_path, demo_data, tiny_model)

    def spec(**lmms: Any) -> Any:
        raw = tomllib.loads(job.read_text())
        raw["evaluation"]["lmms"] = {"tasks": ["orch_vqa"], "include_path": [str(lmms_tasks)],
                                     **lmms}  # fmt: skip
        job.write_text(tomli_w.dumps(raw))
        return load_spec(job, [])

    (finding,) = check_lmms(spec(tasks=["orch_vqa", "no_such_task"]))
    assert finding.level == "error" and "no_such_task" in finding.message, finding
    # The default python, .venv-lmms/bin/python, is relative to where orch runs: the checkout.
    (finding,) = check_lmms(spec(python=str(require_lmms())))
    assert finding.level == "ok" and "lmms-eval 0.7.3" in finding.message, finding
    (finding,) = check_lmms(spec(python="/nope/python"))
    assert finding.level == "error" and "make lmms" in finding.message, finding


FAMILIES_SCRIPT = """
import json, sys
from PIL import Image
from lmms_eval.api.instance import Instance
from workers.lmms.models.orch import OrchLmms

out = {}
for path in sys.argv[2:]:
    model = OrchLmms(pretrained=path, batch_size=2)
    model.task_dict = {"t": {"test": [{"image": sys.argv[1]}, {"image": sys.argv[1]}]}}
    visual = lambda doc: [Image.open(doc["image"]).convert("RGB")]
    requests = [
        Instance("generate_until", (text, {"max_new_tokens": 3, "until": ["\\n"]}, visual, i,
                                    "t", "test"), idx=0,
                 metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i, text in enumerate(["what is in the image?", "what colour is it?"])
    ]
    out[path] = {"answers": model.generate_until(requests),
                 "model_type": model.model.vlm.config.model_type}
print(json.dumps(out))
"""


def test_orchs_model_class_loads_and_generates_for_each_family(
    tmp_path: Path, demo_data: Path
) -> None:
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints through orch's lmms-eval model class, in
    lmms-eval's environment, with lmms-eval's own request objects."""
    from tests.helpers.lmms import lmms_cli_env
    from workers.models.classifier import build_classifier, save_classifier
    from workers.models.tiny import FAMILIES, build_tiny

    python = require_lmms()
    dirs = []
    for family in FAMILIES:
        base = build_tiny(tmp_path / family / "base", family)
        hf = tmp_path / family / "hf"
        save_classifier(build_classifier(base, 2, "mean", "sdpa"), hf, base,
                        {"faces": {"num_classes": 2, "labels": None}})  # fmt: skip
        dirs.append(str(hf))
    image = next((demo_data / "easyvqa" / "images" / "test").iterdir())
    proc = subprocess.run(
        [str(python), "-c", FAMILIES_SCRIPT, str(image), *dirs],
        env=lmms_cli_env(tmp_path / "hf_home"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    types = [out[d]["model_type"] for d in dirs]
    assert types == ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
    for d in dirs:  # two prompts batched, each answered (an untrained model's words)
        answers = out[d]["answers"]
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers), answers


def test_a_task_that_crashes_is_a_failed_part_retried_then_missing(
    tmp_path: Path, demo_data: Path, tiny_model: Path, checkpoint: Path, lmms_tasks: Path
) -> None:
    """The real controller and local backend over a run with one real checkpoint: the task that
    crashes inside lmms-eval fails with lmms-eval's error, is retried, and is missing with that
    reason; the task beside it is merged and logged on the eval axis."""
    from orchestrator.core.controller import Controller, FinishedTraining
    from orchestrator.eval_backends.local import LocalBackend
    from orchestrator.tracking import MemoryTracker

    require_lmms()
    job = demo_job(tmp_path, demo_data, tiny_model)
    raw = tomllib.loads(job.read_text())
    raw["datasets"] = {"faces": raw["datasets"]["faces"]}
    lmms = {"tasks": ["orch_crash", "orch_vqa"], "limit": 4, "batch_size": 4,
            "include_path": [str(lmms_tasks)], "python": str(require_lmms())}  # fmt: skip
    raw["evaluation"] |= {"backend": "local", "max_attempts": 2, "retry_backoff_s": 0,
                          "final_full": False, "lmms": lmms}  # fmt: skip
    job.write_text(tomli_w.dumps(raw))
    spec = load_spec(job, [])
    rundir = RunDir(tmp_path / "run")
    rundir.create("", spec.to_toml_dict())
    target = ckpt.checkpoint_dir(rundir.checkpoints, 10)
    shutil.copytree(checkpoint, target / ckpt.HF_DIR)
    atomic_write_json(target / ckpt.COMPLETE, {"step": 10})
    tracker = MemoryTracker()
    c = Controller(spec, rundir, LocalBackend(), tracker, FinishedTraining(), poll_s=0.2)
    deadline = time.monotonic() + 300
    while c.result is None and time.monotonic() < deadline:
        c.iterate()
        time.sleep(0.2)
    assert c.result is not None, "the controller did not finish in 300 s"
    assert c.result.exit_code != 0 and "10/lmms.orch_crash" in c.result.reason

    ledger = json.loads(rundir.ledger(10, "lmms.orch_crash").read_text())
    assert ledger["attempt"] == 2 and ledger["status"] == "failed"  # retried once
    merged = json.loads(rundir.merged(10).read_text())
    reason = merged["missing"]["lmms.orch_crash"]
    assert "orch_crash: this task crashes on purpose" in reason, reason
    for attempt in (1, 2):
        log = rundir.eval_log(10, "lmms.orch_crash", attempt).read_text()
        assert "ValueError: orch_crash: this task crashes on purpose" in log
    vqa = merged["tasks"]["orch_vqa"]
    assert vqa["n"] == 4 and set(vqa["metrics"]) == {"exact_match", "anls"}
    assert merged["datasets"]["faces"]["n"] > 0
    ((step, logged),) = tracker.eval
    assert step == 10 and logged["tasks/orch_vqa/anls"] == vqa["metrics"]["anls"]


@pytest.mark.e2e
def test_lmms_tasks_on_every_checkpoint_of_a_run(
    tmp_path: Path, demo_data: Path, tiny_model: Path, lmms_tasks: Path
) -> None:
    """A real run with [evaluation.lmms]: every checkpoint gets its task parts, merged into the
    step's tasks and logged on the wandb eval axis; the final full eval runs them without a
    limit; the score through orch is the `lmms-eval` command line's; `orch eval --lmms-tasks`
    evaluates a checkpoint on demand."""
    require_lmms()
    # One training rank: what is under test is the evaluation of its checkpoints.
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=20, checkpoint_every=10,
                   num_workers=1)  # fmt: skip
    raw = tomllib.loads(job.read_text())
    raw["datasets"] = {"faces": raw["datasets"]["faces"]}
    raw["evaluation"]["lmms"] = {"tasks": ["orch_vqa", "orch_mcq"], "limit": 4, "batch_size": 4,
                                 "include_path": [str(lmms_tasks)]}  # fmt: skip
    job.write_text(tomli_w.dumps(raw))
    # From the checkout, as users run it: the default python is its .venv-lmms.
    proc = orch("submit", str(job), "--no-dashboard", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)

    for step in (10, 20):
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert merged["missing"] == {}
        assert merged["tasks"]["orch_vqa"]["n"] == 4 and merged["tasks"]["orch_mcq"]["n"] == 4
        assert set(merged["tasks"]["orch_vqa"]["metrics"]) == {"exact_match", "anls"}
        # lmms-eval's answer extraction is a filter: its metric keeps the filter's name.
        assert set(merged["tasks"]["orch_mcq"]["metrics"]) == {"exact_match/flexible-extract"}
        assert set(merged["tasks"]["orch_vqa"]["stderr"]) == {"exact_match", "anls"}
        part = json.loads((run / "eval" / f"step_{step:06d}" / "lmms.orch_vqa.json").read_text())
        assert part["lmms"]["lmms_eval_version"] == "0.7.3" and part["checkpoint_digest"]
        samples = [json.loads(x) for x in (run / "eval" / f"step_{step:06d}" /
                                           "lmms.orch_vqa.samples.jsonl").open()]  # fmt: skip
        assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]
        assert {"doc", "target", "filtered_resps", "anls", "exact_match"} <= set(samples[0])
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["tasks"]["orch_vqa"]["n"] == 8  # final_limit: none, every document

    wb = read_offline_run(find_offline_runs(run / "wandb")[0])
    evals = {r["eval/step"]: r for r in wb.history if "eval/step" in r}
    assert sorted(evals) == [10, 20]
    for step, row in evals.items():
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert row["eval/tasks/orch_vqa/anls"] == pytest.approx(
            merged["tasks"]["orch_vqa"]["metrics"]["anls"]
        )
        assert "eval/tasks/orch_mcq/exact_match/flexible-extract" in row
        assert not any("stderr" in key for key in row)  # stderrs are not metrics
    shown = orch("results", str(run), cwd=tmp_path)
    assert shown.returncode == 0 and "orch_mcq" in shown.stdout, shown.stdout

    # The same checkpoint and task through the lmms-eval command line: the same scores.
    best = json.loads((run / "best.json").read_text())["step"]
    hf = run / "checkpoints" / f"step_{best:06d}" / "hf"
    cli = subprocess.run(
        lmms_cli(hf, "orch_vqa", lmms_tasks, tmp_path / "cli", batch_size=4),
        env=lmms_cli_env(tmp_path / "hf_home"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    (written,) = (tmp_path / "cli").glob("*/*_results.json")
    scores = json.loads(written.read_text())["results"]["orch_vqa"]
    ours = final["tasks"]["orch_vqa"]["metrics"]
    assert scores["anls,none"] == pytest.approx(ours["anls"], abs=1e-9)
    assert scores["exact_match,none"] == pytest.approx(ours["exact_match"], abs=1e-9)

    # On demand: any checkpoint, any task, with the spec's limit; the same as the run's part.
    again = orch("eval", str(run), "--step", "10", "--lmms-tasks", "orch_mcq", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    ondemand = json.loads((run / "eval" / "ondemand" / "step_000010-partial.json").read_text())
    step10 = json.loads((run / "eval" / "step_000010.json").read_text())
    assert list(ondemand["datasets"]) == []
    assert ondemand["tasks"]["orch_mcq"]["metrics"] == step10["tasks"]["orch_mcq"]["metrics"]
    assert (run / "eval" / "ondemand" / "step_000010-partial" /
            "lmms.orch_mcq.samples.jsonl").is_file()  # fmt: skip

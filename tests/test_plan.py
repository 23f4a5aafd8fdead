"""`orch plan`: the run's cost before it is submitted, as a user types it, checked against the
spec's arithmetic and the FLOPs module."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.cli import orch
from tests.helpers.jobs import demo_job, vqa_job
from tests.helpers.runs import MeasuredPlan


def plan(tmp_path: Path, job: Path, *args: str) -> dict:
    out = orch("plan", str(job), "--json", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_the_plan_of_the_demo_job_adds_up(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=120, checkpoint_every=50)
    p = plan(tmp_path, job)
    assert p["steps"] == 120 and p["global_batch"] == 16 * 2  # batch_size x workers
    samples = sum(d["samples"] for d in p["datasets"].values())
    assert abs(samples - 120 * 32) <= len(p["datasets"])  # rounding per dataset
    digits = p["datasets"]["digits"]
    assert digits["epochs"] == pytest.approx(digits["samples"] / digits["train_rows"], rel=1e-3)
    assert digits["tokens"] > digits["image_tokens"] > 0
    assert p["checkpoints"]["count"] == 3  # 50, 100 and the last step
    assert p["eval_parts"] == 3 * (3 + 1)  # every checkpoint, then the final full eval
    assert p["checkpoints"]["peak_bytes"] == 3 * (
        p["checkpoints"]["state_bytes"] + p["checkpoints"]["hf_bytes"]
    )
    assert p["flops"]["train"] > p["flops"]["eval"] > 0
    assert p["time"] is None  # CPU workers: no peak to divide by, and the plan says so
    shown = orch("plan", str(job), cwd=tmp_path)
    text = shown.stdout + shown.stderr
    assert "give --peak-tflops" in text

    timed = plan(tmp_path, job, "--peak-tflops", "2", "--mfu", "0.5")
    assert timed["time"]["train_s"] == pytest.approx(timed["flops"]["train"] / (2e12 * 0.5 * 2))
    assert timed["time"]["train_gpu_hours"] == 0.0  # use_gpu is off


def test_packed_vqa_rows_are_counted_per_sample(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    p = plan(tmp_path, vqa_job(tmp_path, demo_data, tiny_model, max_steps=60))
    vqa, faces = p["datasets"]["vqa_digits"], p["datasets"]["faces"]
    # A question and its answer are longer than the classification prompt, one image each.
    assert vqa["tokens"] > faces["tokens"] and vqa["image_tokens"] == faces["image_tokens"]
    assert math.isclose(sum(d["share"] for d in p["datasets"].values()), 1.0)


def test_an_impossible_mfu_is_refused(tmp_path: Path, demo_data: Path, tiny_model: Path) -> None:
    out = orch("plan", str(demo_job(tmp_path, demo_data, tiny_model)), "--mfu", "1.5",
               cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "--mfu: 1.5 is not in (0, 1]" in out.stderr


@pytest.mark.slow  # one short run of the job: Ray, two Ray Train workers, its evals (~30 s)
def test_measure_runs_the_job_briefly_and_predicts_the_whole_of_it(
    measured_plan: MeasuredPlan, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's `orch plan JOB --json --measure 2` (conftest), JOB 120 steps, a checkpoint
    every 40."""
    job, p = measured_plan.job, measured_plan.plan
    m, pred = p["measured"], p["prediction"]
    assert m["steps"] == 2
    for key in ("wall_s", "startup_s", "first_step_s", "step_s", "checkpoint_s"):
        assert m[key] > 0, key
    for key in ("ckpt_eval_s", "ckpt_eval_task_s", "final_eval_s", "final_eval_task_s"):
        assert m[key] > 0, key  # the job evaluates every checkpoint, then the best in full
    assert m["wall_s"] > m["startup_s"] + m["first_step_s"] + m["step_s"]
    # The measurement's run directory is gone (the pre-flight's row index stays, a cache).
    assert measured_plan.runs_left == [".index"]
    assert pred["steps"] == 120 and pred["checkpoints"] == 3  # the job's, not the measurement's
    assert pred["train_s"] == pytest.approx(
        m["startup_s"] + m["first_step_s"] + 119 * m["step_s"] + 3 * m["checkpoint_s"]
    )
    assert pred["wall_s"] > pred["train_s"] > m["startup_s"]
    assert pred["train_gpu_hours"] == 0.0 and pred["eval_gpu_hours"] == 0.0  # CPU workers
    said = " ".join(p["assumptions"]["measure"])
    assert "training.max_steps=2" in said and "eval" in said
    assert p["flops"]["train"] > 0  # the FLOPs estimate stays beside the measurement

    # The prediction is arithmetic on the measured figures: it grows with the job's steps by
    # the steady step and the checkpoints, and for the measurement's own shape (N steps, one
    # checkpoint) it gives back the wall time the measurement took.
    from orchestrator.contract.spec import load_spec
    from orchestrator.launch.measure import Measured, predict

    measured = Measured(**{k: v for k, v in m.items() if k != "ckpt_eval_warm_s"})
    spec = load_spec(job)
    longer = predict(measured, spec, 240)
    assert longer["checkpoints"] == 6
    assert longer["train_s"] - pred["train_s"] == pytest.approx(
        120 * m["step_s"] + 3 * m["checkpoint_s"]
    )
    assert longer["wall_s"] > pred["wall_s"]
    itself = load_spec(job, ["training.max_steps=2", "training.checkpoint_every=2"])
    assert predict(measured, itself, 2)["wall_s"] == pytest.approx(m["wall_s"])

    # What a person sees: the same figures as tables, and the assumptions.
    from orchestrator.cli.plan import _render

    capsys.readouterr()
    _render(p)
    shown = capsys.readouterr().out
    assert "measured: 2 steps" in shown and "predicted: 120 steps, 3 checkpoints" in shown
    assert "wall time" in shown and "assumptions:" in shown and "steady step" in shown


def test_bad_measure_arguments_are_refused(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = str(demo_job(tmp_path, demo_data, tiny_model, max_steps=120))
    out = orch("plan", job, "--measure", "0", cwd=tmp_path)
    assert out.returncode == 2 and "--measure: 0 is not a number of steps" in out.stderr
    out = orch("plan", job, "--measure", "120", cwd=tmp_path)
    assert out.returncode == 2
    assert "--measure: 120 steps are not fewer than the job's 120" in out.stderr
    out = orch("plan", job, "--measure", "two", cwd=tmp_path)
    assert out.returncode == 2 and "--measure: invalid int value: 'two'" in out.stderr
    runs = tmp_path / "runs"
    # Nothing was run: no run directory (the pre-flight's row index is all runs/ holds).
    assert [p.name for p in runs.iterdir()] == [".index"], list(runs.iterdir())


def test_a_failed_measurement_fails_the_plan_and_keeps_its_run(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """faces' eval images are not images: the plan (which decodes none of them) passes, the
    measurement's `orch submit` refuses the data in its pre-flight."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rows = [json.loads(line) for line in (demo_data / "faces" / "test.jsonl").open()]
    manifest = tmp_path / "faces_test.jsonl"
    manifest.write_text("".join(json.dumps(r | {"image_path": str(broken)}) + "\n" for r in rows))
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=120)
    job.write_text(job.read_text().replace(str(demo_data / "faces" / "test.jsonl"), str(manifest)))
    out = orch("plan", str(job), "--measure", "2", "--json", cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stdout == ""  # no plan on stdout for a script to take as one
    assert "the measurement run failed (orch submit exited 2)" in out.stderr
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("plan-measure-")]
    assert len(kept) == 1 and str(kept[0]) in out.stderr
    assert "broken.png" in (kept[0] / "submit.log").read_text()

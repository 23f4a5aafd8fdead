"""`orch plan`: the run's cost before it is submitted, as a user types it, checked against the
spec's arithmetic and the FLOPs module."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.cli import orch
from tests.helpers.jobs import demo_job, vqa_job


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

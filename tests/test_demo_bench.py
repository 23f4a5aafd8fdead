"""jobs/demo_bench.toml through the real controller: classification, a real VQA benchmark
(easy-VQA) and multiple-choice questions in one Ray Train + DeepSpeed run, packed VQA and MCQ
rows, every checkpoint evaluated with each dataset's declared metrics, an eval-only dataset
beside them; each trained kind learns clearly above chance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import only_run, orch
from tests.helpers.jobs import job_of

pytestmark = pytest.mark.e2e
MAX_STEPS = 240


def part(run: Path, dataset: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((run / "eval" / "final" / f"{dataset}.json").read_text())
    return value


def test_demo_bench_learns_every_kind(tmp_path: Path, demo_data: Path, tiny_model: Path) -> None:
    job = job_of("demo_bench", tmp_path, demo_data, tiny_model, max_steps=MAX_STEPS,
                 checkpoint_every=MAX_STEPS // 2)  # fmt: skip
    proc = orch("submit", str(job), "--no-dashboard", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)

    for step in (MAX_STEPS // 2, MAX_STEPS):  # every checkpoint, every dataset, declared metrics
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert merged["missing"] == {}, merged["missing"]
        assert sorted(merged["datasets"]) == [
            "digits", "easyvqa", "mcq_digits", "mcq_faces", "mcq_textures"
        ]  # fmt: skip
        assert set(merged["datasets"]["easyvqa"]) >= {"vqa_accuracy", "exact_match", "n"}
        assert set(merged["datasets"]["mcq_digits"]) >= {"mcq_accuracy", "accuracy", "n"}

    # Classification through the shared head: ten digits, chance 0.1.
    assert part(run, "digits")["metrics"]["accuracy"] > 0.5

    # easy-VQA, one-word answers generated and scored as lmms-eval scores them.
    vqa = part(run, "easyvqa")
    assert vqa["n"] == sum(1 for _ in (demo_data / "easyvqa" / "test.jsonl").open())
    # Chance per question type: yes/no 0.5, shape 1/3, color 1/8; 0.32 over the balanced eval
    # set. In 240 steps the tiny model learns the benchmark's question prior (its yes/no
    # accuracy is the question-only baseline's, 0.84), not yet to read colours and shapes; the
    # digits sets show it reading images.
    by_type = vqa["breakdowns"]["per_category_exact_match"]
    assert by_type["yes/no"] > 0.65 and vqa["metrics"]["exact_match"] > 0.36, by_type
    # Ten agreeing references: a right answer scores 1, and EvalAI's normalisation only adds hits.
    assert vqa["metrics"]["vqa_accuracy"] >= vqa["metrics"]["exact_match"] - 1e-9
    assert {"id", "prediction", "reference"} <= set(vqa["samples"][0])

    # Multiple choice, the letter generated (ten options, chance 0.1) ...
    mcq = part(run, "mcq_digits")
    assert mcq["metrics"]["mcq_accuracy"] > 0.4, mcq["metrics"]
    assert {"id", "prediction", "choice", "answer", "options"} <= set(mcq["samples"][0])
    # ... and by the letter's likelihood (A. no B. yes, chance 0.5).
    assert part(run, "mcq_faces")["metrics"]["accuracy"] > 0.75

    # An eval-only dataset: evaluated at every checkpoint (above), never in the training mix.
    assert part(run, "mcq_textures")["n"] == 240  # the final eval reads all of it
    rows = [json.loads(line) for line in (run / "logs" / "train_metrics.jsonl").open()]
    trained = ("digits", "easyvqa", "mcq_digits", "mcq_faces")
    assert not any("mcq_textures/loss" in r for r in rows)
    for name in trained:  # every trained dataset's loss falls
        assert rows[-1][f"{name}/loss"] < rows[0][f"{name}/loss"], name
    # VQA and MCQ samples are packed several to a row, with their images.
    assert 0.0 < rows[-1]["pack_fill"] <= 1.0 and rows[-1]["images_per_pack_row"] >= 1.0

"""jobs/demo_vqa.toml through the real controller: VQA and classification in one Ray Train +
DeepSpeed run, packed VQA rows, eval parts that generate answers, scored by exact match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import only_run, orch
from tests.helpers.jobs import vqa_job

pytestmark = pytest.mark.e2e


def test_demo_vqa_learns_to_answer(tmp_path: Path, demo_data: Path, tiny_model: Path) -> None:
    job = vqa_job(tmp_path, demo_data, tiny_model, max_steps=240, checkpoint_every=120)
    proc = orch("submit", str(job), "--no-dashboard", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = only_run(tmp_path)

    final = json.loads((run / "eval" / "final.json").read_text())
    assert sorted(final["datasets"]) == ["faces", "vqa_digits", "vqa_textures"]
    digits = json.loads((run / "eval" / "final" / "vqa_digits.json").read_text())
    assert digits["kind"] == "vqa" and digits["partial"] is False
    test_rows = sum(1 for _ in (demo_data / "vqa_digits" / "test.jsonl").open())
    assert digits["n"] == test_rows
    # Generated answers scored by exact match: ten digit names, chance is 0.1.
    assert digits["metrics"]["exact_match"] > 0.4, digits["metrics"]
    assert digits["correct"] == round(digits["metrics"]["exact_match"] * digits["n"])
    assert all({"id", "prediction", "reference"} <= set(s) for s in digits["samples"])
    textures = json.loads((run / "eval" / "final" / "vqa_textures.json").read_text())
    assert textures["metrics"]["exact_match"] > 0.2, textures["metrics"]

    # Training logged the packing and per-dataset losses for both objectives.
    rows = [json.loads(line) for line in (run / "logs" / "train_metrics.jsonl").open()]
    last = rows[-1]
    assert {"vqa_digits/loss", "vqa_textures/loss", "faces/loss"} <= set(last)
    assert 0.0 < last["pack_fill"] <= 1.0 and last["images_per_pack_row"] >= 1.0
    assert rows[-1]["vqa_digits/loss"] < rows[0]["vqa_digits/loss"]

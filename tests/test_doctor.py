"""`orch doctor` reports each planted misconfiguration with a fix, and passes a good job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.checks.doctor import diagnose
from orchestrator.cli import main
from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT


@pytest.fixture
def job(tmp_path: Path, demo_data: Path, tiny_model: Path) -> Path:
    return demo_job(tmp_path, demo_data, tiny_model)


def errors(job: Path, *overrides: str, model: bool = False) -> dict[str, str]:
    return {
        f.check: f.message
        for f in diagnose(job, list(overrides), model=model)
        if f.level == "error"
    }


def test_a_good_job_passes_every_check_including_a_real_batch(job: Path) -> None:
    findings = diagnose(job, [])
    assert not [f for f in findings if f.level == "error"], findings
    masking = [f for f in findings if f.check == "masking"]
    assert len(masking) == 3 and all(f.level == "ok" for f in masking)


def test_flash_attention_without_flash_attn(job: Path) -> None:
    found = errors(job, "model.attn_implementation='flash_attention_2'")
    assert (
        "flash_attn is not importable" in found["attention"] or "needs a GPU" in found["attention"]
    )


def test_warmup_longer_than_training(job: Path) -> None:
    assert (
        "warmup_steps (700) >= max_steps (600)"
        in errors(job, "training.warmup_steps=700")["schedule"]
    )


def test_deepspeed_config_that_disagrees_with_the_spec(job: Path, tmp_path: Path) -> None:
    cfg = json.loads((ROOT / "jobs" / "deepspeed" / "zero2.json").read_text())
    cfg["train_batch_size"] = 64
    (tmp_path / "ds.json").write_text(json.dumps(cfg))
    found = errors(job, f"training.deepspeed_config='{tmp_path / 'ds.json'}'")
    assert "train_batch_size is 64 but the job spec implies 32" in found["deepspeed"]


def test_label_out_of_range_names_file_and_line(job: Path, demo_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "faces_train.jsonl"
    lines = (demo_data / "faces" / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[4])
    lines[4] = json.dumps(row | {"label": 2})
    bad.write_text("\n".join(lines) + "\n")
    found = errors(job, f"datasets.faces.train='{bad}'")
    assert f"{bad}:5: label 2 outside [0, 2) of dataset faces" in found["data"]


def test_num_labels_too_small_is_a_spec_error(job: Path) -> None:
    assert "model.num_labels (5) is smaller than" in errors(job, "model.num_labels=5")["spec"]


def test_missing_images_and_exit_code(job: Path, demo_data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "faces"
    shutil.copytree(demo_data / "faces", copy)
    lines = (copy / "train.jsonl").read_text().replace(str(demo_data / "faces"), str(copy))
    (copy / "train.jsonl").write_text(lines)
    (copy / "images" / "train" / "00003.png").unlink()
    found = errors(job, f"datasets.faces.train='{copy / 'train.jsonl'}'")["data"]
    assert (
        f"{copy / 'train.jsonl'}:4: image {copy / 'images' / 'train' / '00003.png'} not found"
        in found
    )
    assert main(["doctor", str(job), "--no-model", "--set", "training.warmup_steps=700"]) == 1
    assert main(["doctor", str(job), "--no-model"]) == 0

"""Job files and eval parts pointed at the session's demo data and tiny model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.spec import JobSpec, validate_spec
from tests.helpers.paths import ROOT


def demo_job(tmp_path: Path, demo_data: Path, tiny_model: Path, **training: Any) -> Path:
    """jobs/demo_mix.toml pointed at the session's data and model, written under tmp_path."""
    raw = tomllib.loads((ROOT / "jobs" / "demo_mix.toml").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw["model"]["path"] = str(tiny_model)
    for name, ds in raw["datasets"].items():
        ds["train"] = str(demo_data / name / "train.jsonl")
        ds["eval"] = str(demo_data / name / "test.jsonl")
        ds["labels"] = str(demo_data / name / "labels.json")
    raw["training"]["deepspeed_config"] = str(ROOT / "jobs" / "deepspeed" / "zero2.json")
    raw["training"].update(training)
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def demo_project(cwd: Path, demo_data: Path, tiny_model: Path) -> Path:
    """``cwd`` made a working directory where jobs/demo_mix.toml's relative paths (data/demo,
    models/tiny-qwen2.5-vl, jobs/deepspeed) find the session's demo data and tiny model, as in a
    checkout after `make run`'s first steps: the job is submitted as a user types it."""
    (cwd / "data").mkdir()
    (cwd / "data" / "demo").symlink_to(demo_data)
    (cwd / "models").mkdir()
    (cwd / "models" / "tiny-qwen2.5-vl").symlink_to(tiny_model)
    (cwd / "jobs").symlink_to(ROOT / "jobs")
    return cwd


def vqa_job(tmp_path: Path, demo_data: Path, tiny_model: Path, **training: Any) -> Path:
    """jobs/demo_vqa.toml pointed at the session's data and model, written under tmp_path."""
    return job_of("demo_vqa", tmp_path, demo_data, tiny_model, **training)


def job_of(name: str, tmp_path: Path, demo_data: Path, tiny_model: Path, **training: Any) -> Path:
    """jobs/NAME.toml pointed at the session's data and model, written under tmp_path (every
    dataset's manifests are its demo folder's train.jsonl and test.jsonl)."""
    raw = tomllib.loads((ROOT / "jobs" / f"{name}.toml").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw["model"]["path"] = str(tiny_model)
    for dataset, ds in raw["datasets"].items():
        folder = demo_data / dataset
        if "train" in ds:  # else eval-only
            ds["train"] = str(folder / "train.jsonl")
        ds["eval"] = str(folder / "test.jsonl")
        if "labels" in ds:
            ds["labels"] = str(folder / "labels.json")
        if "image_roots" in ds:
            ds["image_roots"] = [str(demo_data)]
    raw["training"]["deepspeed_config"] = str(ROOT / "jobs" / "deepspeed" / "zero2.json")
    raw["training"].update(training)
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def eval_part(
    checkpoint: Path, demo_data: Path, out: Path, manifest: Path | None = None, **kw: object
) -> EvalPart:
    """An eval part of the faces dataset (or of ``manifest``) for ``checkpoint``; ``kw``
    overrides any field."""
    faces = {
        "kind": "classification", "train": str(demo_data / "faces" / "train.jsonl"),
        "eval": str(manifest or demo_data / "faces" / "test.jsonl"), "num_classes": 2,
    }  # fmt: skip
    model = {"path": str(checkpoint), "prompt": "what is in the image ?", "min_pixels": 3136,
             "max_pixels": 3136, "attn_implementation": "sdpa"}  # fmt: skip
    base = dict(
        step=10, dataset="faces", kind="classification", checkpoint=str(checkpoint),
        dataset_spec=faces, model_spec=model, eval_ratio=0.5, partial=True, seed=0,
        batch_size=16, out=str(out), metrics=["accuracy", "loss", "top5_accuracy"],
    )  # fmt: skip
    return EvalPart(**(base | kw))  # type: ignore[arg-type]


def make_spec(tmp_path: Path) -> JobSpec:
    """A validated spec with datasets a (2 classes) and b (3 classes), 30 steps, two eval
    attempts and no retry backoff: what the controller tests run against fakes."""
    raw = {
        "name": "t",
        "runs_dir": str(tmp_path),
        "model": {"path": str(tmp_path / "m")},
        "datasets": {
            "a": {"train": "x", "eval": "x", "num_classes": 2},
            "b": {"train": "x", "eval": "x", "num_classes": 3},
        },
        "training": {"max_steps": 30},
        "evaluation": {"max_attempts": 2, "retry_backoff_s": 0},
    }
    return validate_spec(raw)

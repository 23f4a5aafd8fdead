"""Shared fixtures: the real demo data and a tiny real Qwen2.5-VL, built once per session."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

ROOT = Path(__file__).resolve().parents[1]

# Tests never reach a hub or a wandb server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.models.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny")


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


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """An untrained classifier checkpoint's hf/ directory, as the train loop writes it."""
    from workers.models.classifier import build_classifier, save_classifier

    hf = tmp_path_factory.mktemp("ckpt") / "step_000010" / "hf"
    model = build_classifier(tiny_model, 10, "mean", "sdpa")
    save_classifier(model, hf, tiny_model, {"faces": {"num_classes": 2, "labels": None}})
    return hf


def vqa_job(tmp_path: Path, demo_data: Path, tiny_model: Path, **training: Any) -> Path:
    """jobs/demo_vqa.toml pointed at the session's data and model, written under tmp_path."""
    raw = tomllib.loads((ROOT / "jobs" / "demo_vqa.toml").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw["model"]["path"] = str(tiny_model)
    for name, ds in raw["datasets"].items():
        folder = demo_data / name
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

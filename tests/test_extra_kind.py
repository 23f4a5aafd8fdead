"""A dataset kind defined entirely inside tests/ (tests/plugins/regression_kind.py: image
regression with its own mse/mae metrics) trains and evaluates end to end in a real run beside a
built-in kind, with no edit to orchestrator/ or workers/: the registries are the only door."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from PIL import Image

from orchestrator.contract.errors import SpecError
from orchestrator.contract.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "tests.plugins.regression_kind"


def brightness_manifests(demo_data: Path, out: Path) -> dict[str, Path]:
    """Real images (the faces set) with a real target each: the image's mean brightness."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, src in (("train", "train"), ("eval", "test")):
        rows = []
        for line in (demo_data / "faces" / f"{src}.jsonl").read_text().splitlines():
            row = json.loads(line)
            pixels = np.asarray(Image.open(row["image_path"]).convert("L"), dtype=np.float64)
            rows.append(
                {
                    "id": row["id"],
                    "image_path": row["image_path"],
                    "target": round(float(pixels.mean()) / 255.0, 4),
                    "dataset_name": "brightness",
                }
            )
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def job(tmp_path: Path, demo_data: Path, tiny_model: Path, **best: str) -> Path:
    reg = brightness_manifests(demo_data, tmp_path / "brightness")
    raw = {
        "name": "extra_kind",
        "runs_dir": str(tmp_path / "runs"),
        "plugins": [PLUGIN],
        "model": {"path": str(tiny_model), "prompt": "what is in the image ?"},
        "datasets": {
            "brightness": {
                "kind": "regression",
                "train": str(reg["train"]),
                "eval": str(reg["eval"]),
                "eval_ratio": 0.5,
                "tolerance": 0.05,
            },
            "digits": {
                "train": str(demo_data / "digits" / "train.jsonl"),
                "eval": str(demo_data / "digits" / "test.jsonl"),
                "num_classes": 10,
                "eval_ratio": 0.25,
            },
        },
        "training": {
            "max_steps": 10,
            "checkpoint_every": 5,
            "log_every": 5,
            "num_workers": 1,  # one rank is enough to prove the plugin; test_e2e runs two
            "batch_size": 8,
            "lr": 2e-3,
            "warmup_steps": 3,
            "deepspeed_config": str(ROOT / "jobs" / "deepspeed" / "zero2.json"),
        },
        "best": best or {"metric": "brightness_mse"},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_a_plugin_kind_is_validated_by_its_own_section(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    spec = load_spec(job(tmp_path, demo_data, tiny_model))
    assert type(spec.datasets["brightness"]).__name__ == "RegressionSpec"
    assert spec.best.mode == "min"  # from mse's declaration: lower is better
    assert spec.declared_metrics("brightness") == ("mse", "mae", "accuracy")
    assert spec.num_labels == 10
    with pytest.raises(SpecError, match=r"datasets\.digits\.tolerance: unknown key.*regression"):
        load_spec(job(tmp_path, demo_data, tiny_model), ["datasets.digits.tolerance=0.1"])
    with pytest.raises(SpecError, match=r"best\.metric 'digits_mse' is not one of"):
        load_spec(job(tmp_path, demo_data, tiny_model, metric="digits_mse"))


@pytest.mark.e2e
def test_an_extra_kind_trains_and_evaluates_end_to_end(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    path = job(tmp_path, demo_data, tiny_model)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "orchestrator.cli"]
    proc = subprocess.run(
        [*cmd, "submit", str(path), "--no-dashboard"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (p for p in (tmp_path / "runs").iterdir() if (p / "spec.json").is_file())
    for step in (5, 10):
        part = json.loads((run / "eval" / f"step_{step:06d}" / "brightness.json").read_text())
        assert part["kind"] == "regression" and set(part["metrics"]) == {"mse", "mae", "accuracy"}
        assert part["n"] == round(60 * 0.5) and part["metrics"]["mse"] >= 0.0
        assert part["stderr"]["mse"] >= 0.0
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert set(merged["overall"]) >= {"mse", "mae", "accuracy", "loss", "top5_accuracy"}
        # mse over the datasets that report it: brightness alone
        assert merged["overall"]["mse"] == pytest.approx(merged["datasets"]["brightness"]["mse"])
    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "brightness_mse" and best["mode"] == "min"
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["step"] == best["step"] and final["datasets"]["brightness"]["n"] == 60
    res = subprocess.run(
        [*cmd, "results", str(run), "--json"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    assert results["best"]["metric"] == "brightness_mse"
    assert results["final"]["datasets"]["brightness"]["mse"] == pytest.approx(
        final["datasets"]["brightness"]["mse"]
    )
    table = subprocess.run(
        [*cmd, "results", str(run)], cwd=tmp_path, env=env | {"COLUMNS": "250"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0 and "brightness mse" in table.stdout, table.stdout

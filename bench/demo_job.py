"""Where the benchmarks that run the demo job find its data and model (helper, not a benchmark).

By default the `make run` artefacts in the repository (data/demo, models/tiny-qwen2.5-vl); a
benchmark given other folders (``--demo``, ``--model``: the tests build their own) submits
jobs/demo_mix.toml rewritten to point at them.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
MODEL = ROOT / "models" / "tiny-qwen2.5-vl"
JOB = ROOT / "jobs" / "demo_mix.toml"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--demo", type=Path, default=DEMO, help="the demo data (orch data demo)")
    ap.add_argument("--model", type=Path, default=MODEL, help="the tiny model (orch model tiny)")


def check(demo: Path, model: Path) -> None:
    if not (demo / "COMPLETE").is_file() and not (demo / "digits" / "train.jsonl").is_file():
        raise SystemExit(f"{demo}: no demo data; run `make run` (or orch data demo) first")
    if not (model / "config.json").is_file():
        raise SystemExit(f"{model}: no model; run `make run` (or orch model tiny) first")


def write_job(out: Path, demo: Path, model: Path) -> Path:
    """jobs/demo_mix.toml with every path absolute and pointed at ``demo`` and ``model``."""
    raw = tomllib.loads(JOB.read_text())
    raw["model"]["path"] = str(model.resolve())
    for name, ds in raw["datasets"].items():
        for key in ("train", "eval", "labels"):
            if key in ds:
                ds[key] = str((demo / name / Path(ds[key]).name).resolve())
    raw["training"]["deepspeed_config"] = str(ROOT / raw["training"]["deepspeed_config"])
    out.write_text(tomli_w.dumps(raw))
    return out

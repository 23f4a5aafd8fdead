"""How full training's packed rows are: jobs/demo_vqa.toml by token budget against by sample count.

The VQA demo job (two VQA datasets and a classification one, the tiny model, 2 training workers,
no eval) is submitted twice with `orch submit`, for the same number of steps: as shipped, with
``training.batch_tokens`` (every micro-batch two full 256-token rows per worker, packed from a
buffer that spans micro-batches), and as the baseline without it (``batch_size`` 16 samples per
worker, packed among themselves). From each run's logs/train_metrics.jsonl: the mean
``pack_fill`` (real tokens over the padded rows' tokens: the share of the compute that is not
padding), the mean ``pack_budget_fill`` (real tokens over rows x pack_max_tokens), samples per
step and step time. Prints ``train_pack_fill`` (the token-budget run's), the baseline's, and
the ratio.

    PYTHONPATH=. .venv/bin/python bench/train_pack_fill.py [--steps 60] [--quick]

``--quick`` (for `make test`): no training. The same two jobs' first 10 steps are built by
training's own loader (the plan, the Batcher, the VQA collator and its encoder, every rank) and
the fills read from the packed batches: the same fills, under the same names, with
``mode=loader``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_job import ROOT, add_arguments, check


def job(out: Path, demo: Path, model: Path, steps: int, by_tokens: bool) -> Path:
    raw = tomllib.loads((ROOT / "jobs" / "demo_vqa.toml").read_text())
    raw["model"]["path"] = str(model.resolve())
    for name, ds in raw["datasets"].items():
        for key in ("train", "eval", "labels"):
            if key in ds:
                ds[key] = str((demo / name / Path(ds[key]).name).resolve())
        if "image_roots" in ds:
            ds["image_roots"] = [str(demo.resolve())]
    tr = raw["training"]
    tr |= {"max_steps": steps, "checkpoint_every": steps, "log_every": min(10, steps)}
    tr["deepspeed_config"] = str(ROOT / tr["deepspeed_config"])
    if not by_tokens:
        tr.pop("batch_tokens")
    raw["evaluation"] |= {"during_training": False, "final_full": False}
    raw["tracking"] = {"mode": "disabled"}
    raw["runs_dir"] = str(out.parent / "runs")
    out.write_text(tomli_w.dumps(raw))
    return out


def run(path: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--no-dashboard"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"orch submit {path} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    (metrics,) = (path.parent / "runs").glob("*/logs/train_metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    return {
        "pack_fill": mean("pack_fill"),
        "pack_budget_fill": mean("pack_budget_fill"),
        "samples_per_step": sum(r["n"] for r in rows) / rows[-1]["step"],
        "step_time_s": mean("step_time_s"),
    }


def loader_fills(path: Path, steps: int) -> dict[str, float]:
    """The fills of a job's first ``steps`` steps, from training's loader on every rank."""
    from orchestrator.contract.spec import load_spec, resolve_paths
    from workers.data.loader import Plan, make_loader
    from workers.data.microbatch import Batcher, load_train_data
    from workers.train import token_plan

    spec = resolve_paths(load_spec(path), path.parent)
    tr = spec.training
    data = load_train_data(spec)
    world = tr.num_workers
    fill = budget = samples = 0.0
    packs = 0
    for rank in range(world):
        plan = Plan(
            sizes={n: len(s) for n, s in data.items()},
            weights={n: d.mix_weight for n, d in spec.trained.items()},
            seed=tr.seed,
            start_step=0,
            max_steps=steps,
            grad_accum=tr.grad_accum,
            global_micro=tr.batch_size * world,
            rank=rank,
            world=world,
            **token_plan(spec, data, world),
        )
        for batch in make_loader(plan, Batcher(spec, data), workers=0, prefetch=1):
            samples += len(batch)
            vqa = batch.part("vqa")
            if vqa is None:
                continue
            real = int((vqa.segments >= 0).sum())
            fill += vqa.fill_ratio()
            budget += real / (int(vqa.segments.shape[0]) * tr.pack_max_tokens)
            packs += 1
    return {
        "pack_fill": fill / packs,
        "pack_budget_fill": budget / packs,
        "samples_per_step": samples / steps,
        "step_time_s": float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--quick", action="store_true")
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.steps = 10
    check(args.demo, args.model)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="pack_fill-") as tmp:
        for name, by_tokens in (("count", False), ("tokens", True)):
            work = Path(tmp) / name
            work.mkdir()
            path = job(work / "job.toml", args.demo, args.model, args.steps, by_tokens)
            figures[name] = loader_fills(path, args.steps) if args.quick else run(path)
    tokens, count = figures["tokens"], figures["count"]
    print(f"mode={'loader' if args.quick else 'training'}")
    print(f"train_pack_fill={tokens['pack_fill']:.4f}")
    print(f"train_pack_budget_fill={tokens['pack_budget_fill']:.4f}")
    print(f"train_pack_fill_baseline={count['pack_fill']:.4f}")
    print(f"train_pack_budget_fill_baseline={count['pack_budget_fill']:.4f}")
    print(f"train_pack_fill_ratio={tokens['pack_fill'] / count['pack_fill']:.3f}")
    for name, f in figures.items():
        print(f"train_samples_per_step_{name}={f['samples_per_step']:.1f}")
        if not args.quick:
            print(f"train_step_time_s_{name}={f['step_time_s']:.3f}")


if __name__ == "__main__":
    main()

"""ckpt_block_s: how long a checkpoint holds the training loop, synchronous (the baseline: the
loop waits for hf/, the digest and COMPLETE) against asynchronous (training.async_checkpoint:
the loop waits for the DeepSpeed state and a CPU copy of the weights; a thread writes the rest).

Both sides run the demo job (two Ray Train workers, DeepSpeed ZeRO-2 on CPU) in the same
invocation, alternating sync and async, evaluation and tracking off (nothing else competes for
the cores). The figures are read from each run's checkpoint events (logs/train_events.jsonl):
medians over every checkpoint of every run of a side.

    PYTHONPATH=. .venv/bin/python bench/ckpt_block.py [--steps 200] [--every 10] [--rounds 2]
        [--hidden H] [--quick] [--demo D] [--model M]

``--quick``: 12 steps, a checkpoint every 3, one run per side, each run one rank in a process of
its own without Ray (bench/one_rank.py: the same loop and checkpointer as a Ray Train worker,
none of a run's start-up), to check it end to end in `make test`.
``--hidden H``: a wider tiny Qwen2.5-VL (text hidden size H, built in a temporary folder)
instead of the demo's (64), whose checkpoint is too small (about 0.7 MB of weights) for the
HF export to cost much. Needs `make run` artefacts (data/demo, models/tiny-qwen2.5-vl), or
``--demo``/``--model``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import demo_job
from one_rank import run_one_rank

logger = logging.getLogger("bench.ckpt_block")

FIELDS = ("ckpt_block_s", "deepspeed_s", "snapshot_s", "hf_export_s", "hf_block_s", "total_s")


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def submit(
    job: Path, runs: Path, name: str, steps: int, every: int, asynchronous: bool, one_rank: bool
) -> Path:
    """One run of the demo job (``one_rank``: its training as one rank, without Ray); its run
    directory."""
    settings = [
        f"training.max_steps={steps}",
        f"training.checkpoint_every={every}",
        f"training.async_checkpoint={'true' if asynchronous else 'false'}",
    ]
    if one_rank:
        run_one_rank(job, runs / name, settings)
        return runs / name
    cmd = [
        sys.executable, "-m", "orchestrator.cli", "submit", str(job),
        "--no-dashboard", "--run-name", name,
        "--set", f"runs_dir='{runs}'",
        "--set", f"training.max_steps={steps}",
        "--set", f"training.checkpoint_every={every}",
        "--set", f"training.async_checkpoint={'true' if asynchronous else 'false'}",
        "--set", "evaluation.during_training=false",
        "--set", "evaluation.final_full=false",
        "--set", "tracking.mode='disabled'",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"orch submit {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return runs / name


def checkpoint_events(run: Path, asynchronous: bool, expected: int) -> list[dict[str, Any]]:
    """The run's checkpoint events, checked: as many as checkpoints, saved the side's way."""
    events = jsonl(run / "logs" / "train_events.jsonl")
    saved = [e for e in events if e["event"] == "checkpoint"]
    if len(saved) != expected or any(e.get("async") is not asynchronous for e in saved):
        raise SystemExit(f"{run}: expected {expected} checkpoint events, async={asynchronous}")
    complete = len(list((run / "checkpoints").glob("step_*/COMPLETE")))
    if complete != expected:
        raise SystemExit(f"{run}: {complete} complete checkpoints, expected {expected}")
    return saved


def training_s(run: Path) -> float:
    events = jsonl(run / "logs" / "train_events.jsonl")
    start = min(e["time"] for e in events if e["event"] == "started")
    end = max(e["time"] for e in events if e["event"] == "finished")
    return float(end - start)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    ap.add_argument("--hidden", type=int, help="a wider tiny model (text hidden size)")
    ap.add_argument("--quick", action="store_true", help="12 steps, every 3, one run per side")
    demo_job.add_arguments(ap)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.steps, args.every, args.rounds = 12, 3, 1
    expected = len(range(args.every, args.steps + 1, args.every)) + (args.steps % args.every > 0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if args.hidden is not None:
            from workers.models.tiny import build_tiny_qwen2_5_vl

            model = build_tiny_qwen2_5_vl(work / "model", hidden=args.hidden)
        demo_job.check(args.demo, model)
        job = demo_job.write_job(work / "job.toml", args.demo, model)
        events: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        trained: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for asynchronous in (False, True):
                side = "async" if asynchronous else "sync"
                logger.info("round %d/%d: %s", r + 1, args.rounds, side)
                run = submit(
                    job, work / "runs", f"{side}-{r}", args.steps, args.every, asynchronous,
                    one_rank=args.quick,
                )  # fmt: skip
                events[asynchronous] += checkpoint_events(run, asynchronous, expected)
                trained[asynchronous].append(training_s(run))
        weights = sum(
            p.stat().st_size for p in (run / "checkpoints").glob("step_*/hf/*.safetensors")
        ) / max(1, expected)

    print(f"steps={args.steps}")
    print(f"checkpoints_per_run={expected}")
    print(f"runs_per_side={args.rounds}")
    print(f"ranks={1 if args.quick else 2}")
    print(f"hf_weights_mb={weights / 2**20:.2f}")
    med: dict[tuple[str, bool], float] = {}
    for asynchronous in (False, True):
        side = "async" if asynchronous else "sync"
        for name in FIELDS:
            med[name, asynchronous] = statistics.median(e[name] for e in events[asynchronous])
            print(f"{name}_{side}={med[name, asynchronous]:.4f}")
        print(f"ckpt_block_max_s_{side}={max(e['ckpt_block_s'] for e in events[asynchronous]):.4f}")
        print(f"training_s_{side}={statistics.median(trained[asynchronous]):.3f}")
    ratio = med["ckpt_block_s", True] / med["ckpt_block_s", False]
    print(f"ckpt_block_async_vs_sync={ratio:.3f}")
    train_ratio = statistics.median(trained[True]) / statistics.median(trained[False])
    print(f"training_async_vs_sync={train_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

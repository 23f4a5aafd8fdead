"""ckpt_to_logged_s and eval_block_fraction, measured on a real run of the demo job.

- ckpt_to_logged_s: for each checkpoint, from its COMPLETE marker to its merged result being
  published, minus the time its eval parts were computing (the union of their run intervals).
  What is left is orch's own latency: noticing the checkpoint, dispatching, collecting, merging.
- eval_block_fraction: time the training loop spent on anything eval-related (the part of each
  checkpoint's wait that the HF export, which exists only for eval, causes: ``hf_block_s`` of
  the checkpoint events, the CPU copy of the weights when checkpoints are asynchronous; the
  loop never waits on an eval job) over training wall time.

Baselines in the same run: the eval compute itself (ratio overhead/compute) and the training
time. Needs `make run` artefacts (data/demo, models/tiny-qwen2.5-vl), or ``--demo``/``--model``.

    python bench/eval_latency.py [--steps 600] [--every 150] [--quick] [--demo D] [--model M]
    python bench/eval_latency.py --run runs/RUN

``--quick``: 20 steps, one checkpoint (at step 20) and no final full evaluation (it comes after
training and enters no figure), to check the benchmark end to end. ``--run DIR``: the figures
of a run you already have (any finished run with evals during training), nothing submitted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import demo_job


def jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def submit(args: argparse.Namespace, tmp: Path) -> Path:
    """A run of the demo job for the measurement; its run directory."""
    demo_job.check(args.demo, args.model)
    extra: list[str] = []
    if args.quick:
        args.steps, args.every = 20, 20
        extra = ["--set", "evaluation.final_full=false"]
    job = demo_job.write_job(tmp / "job.toml", args.demo, args.model)
    cmd = [
        sys.executable, "-m", "orchestrator.cli", "submit", str(job),
        "--no-dashboard", "--run-name", "bench",
        "--set", f"runs_dir='{tmp}'",
        "--set", f"training.max_steps={args.steps}",
        "--set", f"training.checkpoint_every={args.every}",
        *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"orch submit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return tmp / "bench"


def measure(run: Path) -> None:
    """The figures of a finished run with evals during training."""
    published_file = run / "ledger" / "published.json"
    if not published_file.is_file():
        raise SystemExit(f"{run}: no ledger/published.json (not an orch run directory?)")
    published = json.loads(published_file.read_text())["eval_steps"]
    if not published:
        raise SystemExit(f"{run}: no checkpoint's evaluation was published (during_training off?)")
    overheads, computes = [], []
    for step_s, logged_at in published.items():
        step = int(step_s)
        complete = json.loads((run / "checkpoints" / f"step_{step:06d}" / "COMPLETE").read_text())
        parts = [
            json.loads(p.read_text()) for p in (run / "eval" / f"step_{step:06d}").glob("*.json")
        ]
        busy = union_length(
            [(p["timings"]["started_at"], p["timings"]["finished_at"]) for p in parts]
        )
        overheads.append(logged_at - complete["time"] - busy)
        computes.append(busy)
    events = jsonl(run / "logs" / "train_events.jsonl")
    start = min(e["time"] for e in events if e["event"] == "started")
    end = max(e["time"] for e in events if e["event"] == "finished")
    # hf_block_s: what the export held the loop (runs older than it: the export, all of it).
    saved = [e for e in events if e["event"] == "checkpoint"]
    export = sum(e.get("hf_block_s", e["hf_export_s"]) for e in saved)
    print(f"checkpoints={len(published)}")
    print(f"ckpt_to_logged_s={statistics.mean(overheads):.3f}")
    print(f"ckpt_to_logged_max_s={max(overheads):.3f}")
    print(f"eval_compute_s={statistics.mean(computes):.3f}")
    ratio = statistics.mean(overheads) / statistics.mean(computes)
    print(f"ckpt_to_logged_vs_compute_ratio={ratio:.3f}")
    print(f"eval_block_s={export:.3f}")
    print(f"training_s={end - start:.3f}")
    print(f"eval_block_fraction={export / (end - start):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="20 steps, one checkpoint")
    ap.add_argument(
        "--run", type=Path, help="measure this finished run directory instead of submitting one"
    )
    demo_job.add_arguments(ap)
    args = ap.parse_args()
    if args.run is not None:
        measure(args.run)
        return
    with tempfile.TemporaryDirectory() as tmp:
        measure(submit(args, Path(tmp)))


if __name__ == "__main__":
    main()

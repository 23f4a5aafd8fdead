"""plan_error: `orch plan --measure N`'s predicted wall time of the demo job over the wall time of
the real run of that job, measured right after it on the same machine.

1. `orch plan jobs/demo_mix.toml --measure N --json`: N real steps, one checkpoint, its evals
   and the final eval through `orch submit`, then the prediction for the whole job.
2. `orch submit jobs/demo_mix.toml`, as `make run` submits it (the dashboard on), in a temporary
   runs_dir (`--set runs_dir=...`), timed from launch to exit: the baseline.

Printed: plan_error = predicted / measured wall time (the issue's bar: 0.8-1.25), and the
components side by side, each predicted figure and the real run's (from its files: the
training loop's start, its steps' timestamps, the last checkpoint's COMPLETE), with their
ratios; plan_s is what the measurement cost, plan_vs_run_wall its share of the real run. cpus and
the 1-minute load average at the start, between the two and at the end describe the machine:
the two runs follow each other, so a load that changes between them (other work on a shared
machine) moves plan_error by as much.

    PYTHONPATH=. .venv/bin/python bench/plan_error.py [--measure 20] [--quick]
        [--demo data/demo] [--model models/tiny-qwen2.5-vl]

``--quick``: the job shortened to 60 steps with a checkpoint every 30 (`--set`, on both sides),
``--measure 5`` and no dashboard on either side. Needs `make run` artefacts (data/demo,
models/tiny-qwen2.5-vl), or ``--demo``/``--model``.

``--given FILE``: neither command is run; FILE (JSON) holds a plan and the run of the same job
to compare it with: ``plan`` (what `orch plan --measure N --json` printed), ``plan_s`` (what it
took), ``run`` (the run directory of `orch submit` of that job), ``launched`` and ``exited`` (its
submission's start and exit, epoch seconds). `make test` checks the comparison this way on the
session's plan and demo run, which other tests read too (no load figure between the two then).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import demo_job

ROOT = Path(__file__).resolve().parents[1]


def jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def orch(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m orchestrator.cli ARGS`` from the repository root; (process, wall seconds)."""
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"orch {args[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc, time.time() - t0


def real_run(run: Path, launched: float, exited: float) -> dict[str, float]:
    """The components of a finished run, as the prediction splits its wall time."""
    events = jsonl(run / "logs" / "train_events.jsonl")
    started = min(e["time"] for e in events if e["event"] == "started")
    rows = {int(r["step"]): r["time"] for r in jsonl(run / "logs" / "train_metrics.jsonl")}
    first, last = min(rows), max(rows)
    last_ckpt = max(
        json.loads(p.read_text())["time"] for p in (run / "checkpoints").glob("step_*/COMPLETE")
    )
    return {
        "wall_s": exited - launched,
        "startup_s": started - launched,
        "step_s": (rows[last] - rows[first]) / (last - first),
        "train_s": last_ckpt - launched,
        "after_training_s": exited - last_ckpt,
    }


def measure_and_run(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], float, dict[str, float], dict[str, float]]:
    """`orch plan --measure` of the demo job, then `orch submit` of it: (plan, plan seconds, the
    real run's components, the load averages at the start, between the two and at the end)."""
    demo_job.check(args.demo, args.model)
    extra, measure = [], args.measure
    if args.quick:
        extra = ["--set", "training.max_steps=60", "--set", "training.checkpoint_every=30"]
        extra, measure = [*extra, "--no-dashboard"], 5
    loads = {"start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        job = str(demo_job.write_job(Path(tmp) / "job.toml", args.demo, args.model))
        runs = ["--set", f"runs_dir='{tmp}/runs'"]
        planned, plan_s = orch("plan", job, "--measure", str(measure), "--json", *runs, *extra)
        plan = json.loads(planned.stdout)
        loads["between"] = os.getloadavg()[0]
        launched = time.time()
        orch("submit", job, "--run-name", "bench", *runs, *extra)
        real = real_run(Path(tmp) / "runs" / "bench", launched, time.time())
        left = [p.name for p in (Path(tmp) / "runs").iterdir() if p.name not in ("bench", ".index")]
        if left:
            raise SystemExit(f"orch plan --measure left {left} in the runs directory")
    loads["end"] = os.getloadavg()[0]
    return plan, plan_s, real, loads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", type=int, default=20, help="steps of the plan's measurement")
    ap.add_argument("--quick", action="store_true", help="a 60-step job, --measure 5")
    ap.add_argument("--given", type=Path, help="compare this plan and run (JSON), run nothing")
    demo_job.add_arguments(ap)
    args = ap.parse_args()
    if args.given is not None:
        given = json.loads(args.given.read_text())
        plan, plan_s = given["plan"], float(given["plan_s"])
        real = real_run(Path(given["run"]), float(given["launched"]), float(given["exited"]))
        loads = {"end": os.getloadavg()[0]}
    else:
        plan, plan_s, real, loads = measure_and_run(args)
    m, p = plan["measured"], plan["prediction"]
    print(f"cpus={os.cpu_count()}")
    for when, load in loads.items():
        print(f"load_avg_1m_{when}={load:.2f}")
    print(f"steps={p['steps']}")
    print(f"checkpoints={p['checkpoints']}")
    print(f"measure_steps={m['steps']}")
    print(f"plan_s={plan_s:.3f}")
    print(f"plan_vs_run_wall={plan_s / real['wall_s']:.3f}")
    for name in ("checkpoint_s", "ckpt_eval_s", "ckpt_eval_warm_s", "final_eval_s"):
        print(f"measured_{name}={m[name] if m[name] is not None else 0.0:.3f}")
    predicted = {
        "wall_s": p["wall_s"],
        "startup_s": p["startup_s"],
        "step_s": m["step_s"],
        "train_s": p["train_s"],
        "after_training_s": p["after_training_s"],
    }
    for name, value in predicted.items():
        stem = name.removesuffix("_s")
        print(f"predicted_{name}={value:.3f}")
        print(f"real_{name}={real[name]:.3f}")
        print(f"{stem}_predicted_vs_real={value / real[name]:.3f}")
    print(f"plan_error={p['wall_s'] / real['wall_s']:.3f}")


if __name__ == "__main__":
    main()

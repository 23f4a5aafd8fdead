"""A job's training as one rank in this process, without Ray (helper, not a benchmark).

The quick modes of benchmarks whose figures come from the training loop's own files (its
checkpoint events, its metrics) run the loop this way: the same code a Ray Train worker runs
(workers/train.py's ``train_rank``: the spec from the run directory, the engine, the loader, the
checkpointer), in a process group of one on gloo, with none of a run's fixed cost (Ray, the
worker group, the evaluation jobs). What it does not show is what only a run has: a second rank's
collectives, the controller, the evaluations.

    PYTHONPATH=. .venv/bin/python bench/one_rank.py JOB RUN_DIR [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_one_rank(job: Path, run: Path, overrides: list[str]) -> None:
    """Create ``run`` from ``job`` (with ``overrides``) and train it to the end here."""
    import deepspeed
    import tomli_w
    import torch

    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import load_spec
    from workers.train import train_rank

    resolved = load_spec(job, overrides).to_toml_dict()
    paths = RunDir(run)
    paths.create(tomli_w.dumps(resolved), resolved)
    # Set, DeepSpeed does not look for MPI; the file store needs no port.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    store = run / "process_group.store"
    deepspeed.init_distributed(
        dist_backend="gloo", init_method=f"file://{store}", rank=0, world_size=1
    )
    here = {"rank": 0, "local_rank": 0, "node_rank": 0, "hostname": socket.gethostname(),
            "pid": os.getpid()}  # fmt: skip
    train_rank(paths, 0, 1, 1, torch.device("cpu"), lambda: [here])
    store.unlink(missing_ok=True)


def run_one_rank(job: Path, run: Path, overrides: list[str]) -> None:
    """``train_one_rank`` in a fresh process (each run its own process group and imports)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(job), str(run)]
    for override in overrides:
        cmd += ["--set", override]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"one-rank training of {run} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    train_one_rank(args.job, args.run, args.overrides)


if __name__ == "__main__":
    main()

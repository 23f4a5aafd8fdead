"""`orch export RUN --out DIR`: a checkpoint as a self-contained Hugging Face directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export a checkpoint as a self-contained HF directory")
    add_run_arg(p)
    add_runs_dir_arg(p)
    p.add_argument("--step", default="best", help="N or best (default: best)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.core.export import best_step, export_checkpoint

    rundir = find_run(args.runs_dir, args.run)
    step = best_step(rundir.path) if args.step == "best" else int(args.step)
    export_checkpoint(rundir.checkpoints, step, args.out, {"run": rundir.name})
    return 0

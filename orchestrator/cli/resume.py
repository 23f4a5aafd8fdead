"""`orch resume RUN`: continue a stopped run with its own resolved spec."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("resume", help="continue a stopped run with its own resolved spec")
    add_run_arg(p)
    add_runs_dir_arg(p)
    p.add_argument("--no-dashboard", action="store_true", help="embedded Ray without dashboard")
    p.add_argument("--ray-address", help="join this Ray cluster (a SLURM allocation's head)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.launch.submit import submit

    rundir = find_run(args.runs_dir, args.run)
    spec = rundir.read_spec()
    update: dict[str, Any] = {"runs_dir": rundir.path.parent}
    if args.ray_address:
        update["ray_address"] = args.ray_address
    spec = spec.model_copy(update=update)
    return submit(spec, run_name=rundir.name, dashboard=not args.no_dashboard)

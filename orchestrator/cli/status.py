"""`orch status [RUN]`: training progress, checkpoints, eval parts, best (and the Ray job's)."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("status", help="training progress, checkpoints, eval parts, best")
    add_run_arg(p, latest=True)
    add_runs_dir_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.launch import ray_job as cluster_ray
    from orchestrator.views.status import collect_status, render_status

    rundir = find_run(args.runs_dir, args.run)
    status = collect_status(rundir)
    status["ray_job"] = cluster_ray.job_status(rundir)
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
    else:
        render_status(status)
    return 0

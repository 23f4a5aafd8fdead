"""`orch logs [RUN]`: a run's controller log (and eval logs), or its Ray job's driver log."""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg
from orchestrator.contract.errors import RunDirError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("logs", help="print a run's controller log (and eval logs)")
    add_run_arg(p, latest=True)
    add_runs_dir_arg(p)
    p.add_argument("--eval", action="store_true", help="also the eval parts' logs")
    p.add_argument(
        "--follow", action="store_true", help="a Ray job's driver log, streamed until it ends"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.launch import ray_job as cluster_ray
    from orchestrator.views.status import log_files

    rundir = find_run(args.runs_dir, args.run)
    ray_job = cluster_ray.recorded_job(rundir)
    if args.follow:
        if ray_job is None:
            raise RunDirError("--follow streams a Ray job's log; use `tail -f` on files")
        cluster_ray.follow_logs(rundir)
        return 0
    if ray_job is not None:
        sys.stdout.write(
            f"==> Ray job {ray_job['submission_id']} at {ray_job['address']} <==\n"
            f"{cluster_ray.job_logs(rundir)}\n"
        )
    for path in log_files(rundir, args.eval):
        sys.stdout.write(f"==> {path} <==\n{path.read_text()}\n")
    return 0

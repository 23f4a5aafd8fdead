"""`orch cancel RUN`: cancel a run submitted to a cluster (its SLURM job or Ray job)."""

from __future__ import annotations

import argparse
import json
import logging

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg
from orchestrator.contract.errors import RunDirError

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("cancel", help="cancel a run submitted to a cluster (SLURM or Ray job)")
    add_run_arg(p)
    add_runs_dir_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import subprocess

    from orchestrator.contract.layout import find_run
    from orchestrator.launch import ray_job as cluster_ray

    rundir = find_run(args.runs_dir, args.run)
    if cluster_ray.recorded_job(rundir) is not None:
        logger.info("%s", cluster_ray.stop_job(rundir))
        return 0
    job = rundir.slurm_dir / "job.json"
    if not job.is_file():
        raise RunDirError(
            f"{rundir.path}: not submitted to a cluster (no slurm/job.json, no ray_job.json)"
        )
    job_id = json.loads(job.read_text())["job_id"]
    out = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RunDirError(f"scancel {job_id} failed: {out.stderr.strip()}")
    logger.info("cancelled SLURM job %s (run %s)", job_id, rundir.name)
    return 0

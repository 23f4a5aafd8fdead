"""`orch validate JOB`: check a job spec and its data (every row, every image) without training."""

from __future__ import annotations

import argparse
import logging

from orchestrator.cli.common import Subparsers, add_spec_args, load_job_spec

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="check a job spec and its data without training")
    add_spec_args(p)
    p.add_argument(
        "--sample", type=int, metavar="K", help="decode K images per manifest (default: all)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.checks.validate import render_stats, validate_data
    from orchestrator.launch.submit import preflight

    spec = load_job_spec(args)
    preflight(spec, sample=0)  # model, DeepSpeed config, resume point
    render_stats(validate_data(spec, args.sample))
    logger.info("%s is valid", args.job)
    return 0

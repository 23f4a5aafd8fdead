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
    from orchestrator.checks.disk import check_disk
    from orchestrator.checks.validate import render_stats, validate_data
    from orchestrator.diskuse import human_bytes
    from orchestrator.launch.submit import preflight

    spec = load_job_spec(args)
    preflight(spec, sample=0)  # model, DeepSpeed config, resume point
    stats = validate_data(spec, args.sample)
    render_stats(stats)
    steps = spec.training.steps_for({s.name: s.train for s in stats})
    size = check_disk(spec, steps, spec.runs_dir)
    logger.info(
        "checkpoints: %d over %d steps, %s each (%s DeepSpeed state, %s HF weights), about %s "
        "at their peak%s",
        size.checkpoints, steps, human_bytes(size.one_bytes), human_bytes(size.state_bytes),
        human_bytes(size.hf_bytes), human_bytes(size.peak_bytes),
        " under retention" if spec.training.retention else " (every one is kept: see "
        "training.keep_last and keep_weights)",
    )  # fmt: skip
    logger.info("%s is valid", args.job)
    return 0

"""`orch import-lmms RUN FILES --step N`: lmms-eval results as eval parts of a checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("import-lmms", help="import lmms-eval *_results.json as eval parts")
    add_run_arg(p)
    p.add_argument("files", nargs="+", type=Path, help="lmms-eval results JSON file(s)")
    p.add_argument("--step", type=int, required=True, help="the checkpoint step they evaluated")
    add_runs_dir_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.errors import RunDirError
    from orchestrator.contract.layout import find_run
    from orchestrator.core.lmms_import import import_results
    from orchestrator.launch.submit import publish_now

    rundir = find_run(args.runs_dir, args.run)
    for path in args.files:
        for part in import_results(rundir, args.step, path):
            logger.info("imported %s", part)
    try:
        publish_now(rundir)
    except RunDirError as e:  # a live controller holds the run: it publishes the parts itself
        logger.info("%s; it will merge and publish the imported parts", e)
    return 0

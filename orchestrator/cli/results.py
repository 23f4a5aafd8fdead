"""`orch results [RUN]`: per-step, best and final results of a run (a table, JSON, a plot)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("results", help="per-step, best and final results of a run")
    add_run_arg(p, latest=True)
    add_runs_dir_arg(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--metric", metavar="NAME", help="show this metric (default: each dataset's primary one)"
    )
    shown.add_argument("--all", action="store_true", help="show every metric of every dataset")
    p.add_argument(
        "--plot",
        type=Path,
        nargs="?",
        const=Path("results.png"),
        metavar="PNG",
        help="also write per-dataset curves to PNG (default: RUN/results.png)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.errors import SpecError
    from orchestrator.contract.layout import find_run
    from orchestrator.views.results import collect, render, select_columns

    rundir = find_run(args.runs_dir, args.run)
    results = collect(rundir)
    if args.metric is not None:
        try:
            select_columns(results, args.metric)
        except ValueError as e:
            raise SpecError(f"--metric: {e}") from None
    if args.plot is not None:
        from orchestrator.views.plot import plot_results

        png = args.plot if args.plot.is_absolute() else rundir.path / args.plot
        logger.info("wrote %s", plot_results(results, png))
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        render(results, metric=args.metric, every=args.all)
    return 0

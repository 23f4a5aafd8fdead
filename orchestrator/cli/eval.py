"""`orch eval RUN --step N|best|latest`: evaluate one checkpoint of a run on demand."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg
from orchestrator.contract.exitcodes import ExitCode


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate one checkpoint of a run on demand")
    add_run_arg(p)
    add_runs_dir_arg(p)
    p.add_argument("--step", default="best", help="N, best or latest (default: best)")
    p.add_argument("--full", action="store_true", help="whole eval sets (ignore eval_ratio)")
    p.add_argument("--datasets", help="comma-separated subset (default: all)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.core.on_demand import evaluate_on_demand, resolve_step
    from orchestrator.eval_backends import make_backend
    from orchestrator.views.results import render, step_record

    rundir = find_run(args.runs_dir, args.run)
    spec = rundir.read_spec()
    step = resolve_step(rundir, args.step)
    names = args.datasets.split(",") if args.datasets else list(spec.datasets)
    # The same factory as `orch submit`'s, with the backend of --backend instead of the spec's.
    backend = make_backend(spec, rundir, args.backend)
    try:
        merged = evaluate_on_demand(spec, rundir, backend, step, names, args.full)
    finally:
        backend.close()  # parts still running (an error, ^C) are cancelled, not left behind
    render(
        {
            "run": rundir.name,
            "run_dir": str(rundir.path),
            "best": None,
            "steps": [step_record(merged)],
            "final": None,
        },
        show_best=False,
    )
    return ExitCode.FAILED if merged["missing"] else ExitCode.OK

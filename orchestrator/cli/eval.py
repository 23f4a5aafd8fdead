"""`orch eval RUN --step N|best|latest`: evaluate one checkpoint of a run on demand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.common import Subparsers, add_run_arg, add_runs_dir_arg
from orchestrator.contract.errors import SpecError
from orchestrator.contract.exitcodes import ExitCode

if TYPE_CHECKING:
    from orchestrator.contract.spec import JobSpec


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate one checkpoint of a run on demand")
    add_run_arg(p)
    add_runs_dir_arg(p)
    p.add_argument("--step", default="best", help="N, best or latest (default: best)")
    p.add_argument("--full", action="store_true", help="whole eval sets (ignore eval_ratio)")
    p.add_argument(
        "--datasets",
        help="comma-separated subset (default: all, or none when --lmms-tasks is given)",
    )
    p.add_argument(
        "--lmms-tasks",
        help="comma-separated lmms-eval tasks to run on the checkpoint, each one part "
        "([evaluation.lmms] of the run's spec for the rest, or its defaults)",
    )
    p.add_argument(
        "--lmms-include-path",
        action="append",
        default=[],
        type=Path,
        help="a folder of lmms-eval task YAMLs (repeatable; added to the spec's include_path)",
    )
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.contract.layout import find_run
    from orchestrator.contract.spec import lmms_part_name
    from orchestrator.core.on_demand import evaluate_on_demand, resolve_step
    from orchestrator.eval_backends import make_backend
    from orchestrator.views.results import render, step_record

    rundir = find_run(args.runs_dir, args.run)
    spec = rundir.read_spec()
    step = resolve_step(rundir, args.step)
    names = args.datasets.split(",") if args.datasets else []
    if args.lmms_tasks:
        spec = with_lmms_tasks(spec, args.lmms_tasks.split(","), args.lmms_include_path)
        names += [lmms_part_name(t) for t in args.lmms_tasks.split(",")]
    elif args.lmms_include_path:
        raise SpecError("--lmms-include-path needs --lmms-tasks")
    elif not names:
        names = list(spec.part_names)
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


def with_lmms_tasks(spec: JobSpec, tasks: list[str], include_path: list[Path]) -> JobSpec:
    """The run's spec with ``tasks`` as its lmms-eval tasks (validated as a spec's would be)."""
    from pydantic import ValidationError

    from orchestrator.contract.spec import LmmsSpec

    base = spec.evaluation.lmms
    raw = base.model_dump() if base is not None else {}
    raw["tasks"] = tasks
    raw["include_path"] = [*raw.get("include_path", []), *(p.resolve() for p in include_path)]
    try:
        lmms = LmmsSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"--lmms-tasks: {e.errors()[0]['msg']}") from None
    evaluation = spec.evaluation.model_copy(update={"lmms": lmms})
    return spec.model_copy(update={"evaluation": evaluation})

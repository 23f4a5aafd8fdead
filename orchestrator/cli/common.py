"""Arguments several verbs share, and the logger every verb logs to."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.contract.spec import JobSpec

# The subparsers object of `orch` (argparse keeps its class private).
Subparsers = Any


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", type=Path, help="job spec (TOML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set training.lr=1e-4 (CLI > TOML > defaults)",
    )


def add_run_arg(p: argparse.ArgumentParser, *, latest: bool = False) -> None:
    """The run positional: required, or (``latest``) defaulting to the latest run."""
    if latest:
        p.add_argument("run", nargs="?", help="run name or directory (default: the latest run)")
    else:
        p.add_argument("run", help="run name or directory")


def add_runs_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))


def load_job_spec(args: argparse.Namespace, extra: Sequence[str] = ()) -> JobSpec:
    """The job spec of ``args.job`` with its ``--set`` overrides, then ``extra`` ones."""
    from orchestrator.contract.spec import load_spec

    return load_spec(args.job, [*args.overrides, *extra])

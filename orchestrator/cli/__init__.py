"""The `orch` command: parse and dispatch, nothing else."""

from __future__ import annotations

import argparse
import logging

from orchestrator.cli import (
    cancel,
    data,
    doctor,
    export,
    import_lmms,
    logs,
    model,
    plan,
    results,
    resume,
    status,
    submit,
    validate,
)
from orchestrator.cli import (
    eval as evaluate,
)
from orchestrator.contract.errors import OrchError
from orchestrator.contract.exitcodes import ExitCode

logger = logging.getLogger("orch")

# One module per verb, in the order `orch --help` lists them. Each adds its parser
# (`add_parser(subparsers)`) and registers its `run(args) -> int` as the parser's `func`.
VERBS = (
    submit,
    resume,
    cancel,
    validate,
    plan,
    doctor,
    results,
    evaluate,
    import_lmms,
    status,
    logs,
    data,
    model,
    export,
)


def build_parser() -> argparse.ArgumentParser:
    # The description is the docstring of this package, as it was of the former cli.py.
    parser = argparse.ArgumentParser(prog="orch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from orchestrator.logging_setup import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except OrchError as e:
        logger.error("%s", e)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        logger.error("interrupted")
        return ExitCode.INTERRUPTED

"""`orch doctor JOB`: find misconfigurations before spending compute; exit 1 on an error."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.cli.common import Subparsers, add_spec_args
from orchestrator.contract.exitcodes import ExitCode


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="find misconfigurations before spending compute")
    add_spec_args(p)
    p.add_argument("--no-model", action="store_true", help="skip the real-batch model check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from orchestrator.checks.doctor import diagnose, render

    findings = diagnose(args.job, args.overrides, model=not args.no_model)
    if args.json:
        sys.stdout.write(json.dumps([asdict(f) for f in findings], indent=2) + "\n")
    else:
        render(findings)
    return ExitCode.FAILED if any(f.level == "error" for f in findings) else ExitCode.OK

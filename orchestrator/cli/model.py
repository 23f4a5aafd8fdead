"""`orch model tiny --out DIR`: a tiny random Qwen-VL of the real architecture."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("model", help="models")
    msub = p.add_subparsers(dest="model_command", required=True)
    m = msub.add_parser("tiny", help="write a tiny random Qwen-VL (real architecture)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--family", choices=["qwen2-vl", "qwen2.5-vl", "qwen3-vl"], default="qwen2.5-vl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workers.models.tiny import build_tiny

    build_tiny(args.out, args.family, seed=args.seed)
    return 0

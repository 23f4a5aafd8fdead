"""`orch data demo|prepare`: build the offline demo datasets, or convert a dataset layout into
orch manifests (and print the job spec section that uses them)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import Subparsers

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("data", help="datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("demo", help="build the offline demo datasets")
    d.add_argument("--out", type=Path, default=Path("data/demo"))
    d.add_argument("--force", action="store_true")
    d = dsub.add_parser("prepare", help="convert a dataset layout into orch manifests")
    d.add_argument("kind", choices=["folders", "food101", "hf", "vqa-jsonl"])
    d.add_argument("src", type=Path)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--name", required=True, help="dataset name (as in [datasets.NAME])")
    d.add_argument("--max-samples", type=int, help="at most N samples per split")
    d.add_argument("--output-format", choices=["jsonl", "parquet"], default="jsonl")
    d.add_argument("--image-root", type=Path, action="append", default=[])
    d.add_argument("--eval-fraction", type=float, default=0.2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--image-column", default="image")
    d.add_argument("--label-column", default="label")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        return _prepare(args)
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from workers.data.demo import build_demo

    for built in build_demo(args.out, force=args.force):
        logger.info(
            "%s: %d train, %d test, %d classes",
            built.name,
            built.n_train,
            built.n_test,
            built.num_classes,
        )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from workers.data import prepare as prep

    common: dict[str, Any] = {"fmt": args.output_format, "max_samples": args.max_samples}
    if args.kind == "folders":
        done = prep.prepare_folders(
            args.src,
            args.out,
            args.name,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
            **common,
        )
    elif args.kind == "food101":
        done = prep.prepare_food101(args.src, args.out, args.name, **common)
    elif args.kind == "hf":
        done = prep.prepare_hf(
            args.src,
            args.out,
            args.name,
            image_column=args.image_column,
            label_column=args.label_column,
            **common,
        )
    else:
        done = prep.prepare_vqa_jsonl(
            args.src, args.out, args.name, image_roots=args.image_root, **common
        )
    sys.stdout.write(_spec_section(args, done))
    return 0


def _spec_section(args: argparse.Namespace, done: Any) -> str:
    """The [datasets.NAME] section of a job spec that reads the prepared manifests."""
    ext = args.output_format
    lines = [f"[datasets.{args.name}]"]
    if done.num_classes is None:
        lines.append('kind = "vqa"')
    lines.append(f'train = "{done.out / f"train.{ext}"}"')
    lines.append(
        f'eval = "{done.out / f"eval.{ext}"}"' if "eval" in done.splits else "# eval = ..."
    )
    if done.num_classes is not None:
        lines += [f"num_classes = {done.num_classes}", f'labels = "{done.out / "labels.json"}"']
    return "\n".join(lines) + "\n"

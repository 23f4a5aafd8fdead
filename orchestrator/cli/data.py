"""`orch data demo|prepare`: build the offline demo datasets, or convert a dataset layout (or one
of the benchmarks lmms-eval evaluates, kept offline) into orch manifests, and print the job spec
section that uses them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import Subparsers
from orchestrator.contract.errors import OrchError

logger = logging.getLogger("orch")

LAYOUTS = ("folders", "food101", "hf", "vqa-jsonl")
BENCHMARKS = (
    "mmbench",
    "mmmu",
    "mmstar",
    "scienceqa",
    "textvqa",
    "docvqa",
    "infovqa",
    "chartqa",
    "ocrbench",
    "mme",
)
"""The benchmarks of workers/data/benchmarks (named here so that parsing the command line imports
no data-plane code; a test keeps the two lists equal)."""


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("data", help="datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("demo", help="build the offline demo datasets")
    d.add_argument("--out", type=Path, default=Path("data/demo"))
    d.add_argument("--force", action="store_true")
    d = dsub.add_parser(
        "prepare", help="convert a dataset layout or a benchmark into orch manifests"
    )
    d.add_argument("kind", choices=[*LAYOUTS, *BENCHMARKS])
    d.add_argument(
        "src",
        type=Path,
        help="the layout's folder or file; for a benchmark: a Parquet file, a folder of Parquet "
        "files or a datasets save_to_disk folder",
    )
    d.add_argument("--out", type=Path, required=True)
    d.add_argument(
        "--name",
        help="dataset name (as in [datasets.NAME]); required for a layout, a benchmark's "
        "defaults to the benchmark",
    )
    d.add_argument(
        "--split",
        help="benchmarks: the split to convert when the source holds several (default: the one "
        "lmms-eval evaluates)",
    )
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
    common: dict[str, Any] = {"fmt": args.output_format, "max_samples": args.max_samples}
    if args.kind in BENCHMARKS:
        from workers.data.benchmarks import prepare_benchmark

        name = _benchmark_name(args)
        bench = prepare_benchmark(args.kind, args.src, args.out, name, split=args.split, **common)
        sys.stdout.write(benchmark_tables(bench.tables, bench.split))
        return 0
    if args.name is None:
        raise OrchError(f"orch data prepare {args.kind}: --name is required (the [datasets.NAME])")
    if args.split is not None:
        raise OrchError(f"orch data prepare {args.kind}: --split is for benchmarks only")

    from workers.data import prepare as prep

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


def _benchmark_name(args: argparse.Namespace) -> str:
    from orchestrator.contract.spec import DATASET_NAME

    name = str(args.name or args.kind)
    if not DATASET_NAME.match(name):
        raise OrchError(
            f"--name {name!r} must match {DATASET_NAME.pattern} (it becomes [datasets.{name}], "
            "a metric name and a file name)"
        )
    return name


def _toml_string(value: object) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def benchmark_tables(tables: list[Any], split: str) -> str:
    """The [datasets.NAME] table of each manifest a benchmark wrote. An eval split is an
    eval-only dataset (no ``train``: never trained on, evaluated at every checkpoint). A training
    split is the train manifest, and its eval is left to the user."""
    out = []
    for t in tables:
        lines = [f"[datasets.{t.name}]", f'kind = "{t.kind}"']
        if t.eval is not None:
            lines += [
                "# eval-only: evaluated at every checkpoint, never trained on",
                f"eval = {_toml_string(t.eval)}",
            ]
        else:
            lines += [
                f"train = {_toml_string(t.train)}",
                f"# eval = ...  ({split} is a training split)",
            ]
        lines += [f"{key} = {_toml_string(value)}" for key, value in t.settings]
        lines.append(f"metrics = [{', '.join(_toml_string(m) for m in t.metrics)}]")
        rows = f"{t.rows} row{'s' if t.rows != 1 else ''}"
        lines.append(f"description = {_toml_string(f'{t.description}: {rows}')}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


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

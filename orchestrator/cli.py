"""The `orch` command: parse and dispatch, nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchError

logger = logging.getLogger("orch")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", type=Path, help="job spec (TOML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set training.lr=1e-4 (CLI > TOML > defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="train and evaluate a job")
    _spec_args(p)
    p.add_argument("--run-name", help="run directory name; an existing run is continued")
    p.add_argument(
        "--resume-from",
        metavar="RUN_OR_CHECKPOINT",
        help="a new run that continues from a checkpoint (weights, optimizer, step, data position)",
    )
    p.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="a new run that starts from a checkpoint's weights (and head) only",
    )
    p.add_argument("--no-dashboard", action="store_true", help="embedded Ray without dashboard")

    p = sub.add_parser("resume", help="continue a stopped run with its own resolved spec")
    p.add_argument("run", help="run name or directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--no-dashboard", action="store_true", help="embedded Ray without dashboard")

    p = sub.add_parser("validate", help="check a job spec and its data without training")
    _spec_args(p)
    p.add_argument(
        "--sample", type=int, metavar="K", help="decode K images per manifest (default: all)"
    )

    p = sub.add_parser("doctor", help="find misconfigurations before spending compute")
    _spec_args(p)
    p.add_argument("--no-model", action="store_true", help="skip the real-batch model check")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("results", help="per-step, best and final results of a run")
    p.add_argument("run", nargs="?", help="run name or directory (default: the latest run)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--plot",
        type=Path,
        nargs="?",
        const=Path("results.png"),
        metavar="PNG",
        help="also write per-dataset curves to PNG (default: RUN/results.png)",
    )

    p = sub.add_parser("eval", help="evaluate one checkpoint of a run on demand")
    p.add_argument("run", help="run name or directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--step", default="best", help="N, best or latest (default: best)")
    p.add_argument("--full", action="store_true", help="whole eval sets (ignore eval_ratio)")
    p.add_argument("--datasets", help="comma-separated subset (default: all)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")

    p = sub.add_parser("import-lmms", help="import lmms-eval *_results.json as eval parts")
    p.add_argument("run", help="run name or directory")
    p.add_argument("files", nargs="+", type=Path, help="lmms-eval results JSON file(s)")
    p.add_argument("--step", type=int, required=True, help="the checkpoint step they evaluated")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))

    p = sub.add_parser("status", help="training progress, checkpoints, eval parts, best")
    p.add_argument("run", nargs="?", help="run name or directory (default: the latest run)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="print a run's controller log (and eval logs)")
    p.add_argument("run", nargs="?", help="run name or directory (default: the latest run)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--eval", action="store_true", help="also the eval parts' logs")

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

    p = sub.add_parser("model", help="models")
    msub = p.add_subparsers(dest="model_command", required=True)
    m = msub.add_parser("tiny", help="write a tiny random Qwen-VL (real architecture)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--family", choices=["qwen2-vl", "qwen2.5-vl", "qwen3-vl"], default="qwen2.5-vl")

    p = sub.add_parser("export", help="export a checkpoint as a self-contained HF directory")
    p.add_argument("run", help="run name or directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--step", default="best", help="N or best (default: best)")
    p.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    from orchestrator.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except OrchError as e:
        logger.error("%s", e)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("submit", "validate"):
        from orchestrator.spec import load_spec
        from orchestrator.submit import preflight, submit

        overrides = list(args.overrides)
        if getattr(args, "resume_from", None):
            overrides.append(f"training.resume_from={json.dumps(args.resume_from)}")
        if getattr(args, "init_from", None):
            hf = Path(args.init_from)
            hf = hf / "hf" if (hf / "hf").is_dir() else hf
            overrides.append(f"model.path={json.dumps(str(hf))}")
        spec = load_spec(args.job, overrides)
        if args.command == "validate":
            from orchestrator.validate import render_stats, validate_data

            preflight(spec, sample=0)  # model, DeepSpeed config, resume point
            render_stats(validate_data(spec, args.sample))
            logger.info("%s is valid", args.job)
            return 0
        return submit(spec, run_name=args.run_name, dashboard=not args.no_dashboard)
    if args.command == "results":
        from orchestrator.report import collect, render
        from orchestrator.rundir import find_run

        rundir = find_run(args.runs_dir, args.run)
        results = collect(rundir)
        if args.plot is not None:
            from orchestrator.plot import plot_results

            png = args.plot if args.plot.is_absolute() else rundir.path / args.plot
            logger.info("wrote %s", plot_results(results, png))
        if args.json:
            sys.stdout.write(json.dumps(results, indent=2) + "\n")
        else:
            render(results)
        return 0
    if args.command == "resume":
        from orchestrator.rundir import find_run
        from orchestrator.submit import submit

        rundir = find_run(args.runs_dir, args.run)
        spec = rundir.read_spec()
        spec = spec.model_copy(update={"runs_dir": rundir.path.parent})
        return submit(spec, run_name=rundir.name, dashboard=not args.no_dashboard)
    if args.command == "eval":
        return _eval(args)
    if args.command == "doctor":
        from dataclasses import asdict

        from orchestrator.doctor import diagnose
        from orchestrator.doctor import render as render_findings

        findings = diagnose(args.job, args.overrides, model=not args.no_model)
        if args.json:
            sys.stdout.write(json.dumps([asdict(f) for f in findings], indent=2) + "\n")
        else:
            render_findings(findings)
        return 1 if any(f.level == "error" for f in findings) else 0
    if args.command == "import-lmms":
        return _import_lmms(args)
    if args.command in ("status", "logs"):
        from orchestrator.rundir import find_run
        from orchestrator.status import collect_status, log_files, render_status

        rundir = find_run(args.runs_dir, args.run)
        if args.command == "logs":
            for path in log_files(rundir, args.eval):
                sys.stdout.write(f"==> {path} <==\n{path.read_text()}\n")
            return 0
        status = collect_status(rundir)
        if args.json:
            sys.stdout.write(json.dumps(status, indent=2) + "\n")
        else:
            render_status(status)
        return 0
    if args.command == "data" and args.data_command == "prepare":
        return _prepare(args)
    if args.command == "data":
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
    if args.command == "model":
        from workers.models.tiny import build_tiny

        build_tiny(args.out, args.family, seed=args.seed)
        return 0
    if args.command == "export":
        from orchestrator.export import best_step, export_checkpoint
        from orchestrator.rundir import find_run

        rundir = find_run(args.runs_dir, args.run)
        step = best_step(rundir.path) if args.step == "best" else int(args.step)
        export_checkpoint(rundir.checkpoints, step, args.out, {"run": rundir.name})
        return 0
    raise AssertionError(args.command)


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
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from orchestrator.backends.local import LocalBackend
    from orchestrator.ondemand import evaluate_on_demand, resolve_step
    from orchestrator.report import render, step_record
    from orchestrator.rundir import find_run

    rundir = find_run(args.runs_dir, args.run)
    spec = rundir.read_spec()
    step = resolve_step(rundir, args.step)
    names = args.datasets.split(",") if args.datasets else list(spec.datasets)
    backend: Any
    if args.backend == "ray":
        import ray

        from orchestrator.backends.ray_tasks import RayBackend

        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        backend = RayBackend(spec.evaluation.cpus_per_task)
    else:
        backend = LocalBackend()
    merged = evaluate_on_demand(spec, rundir, backend, step, names, args.full)
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
    return 1 if merged["missing"] else 0


def _import_lmms(args: argparse.Namespace) -> int:
    from orchestrator.errors import RunDirError
    from orchestrator.lmms import import_results
    from orchestrator.rundir import find_run
    from orchestrator.submit import publish_now

    rundir = find_run(args.runs_dir, args.run)
    for path in args.files:
        for part in import_results(rundir, args.step, path):
            logger.info("imported %s", part)
    try:
        publish_now(rundir)
    except RunDirError as e:  # a live controller holds the run: it publishes the parts itself
        logger.info("%s; it will merge and publish the imported parts", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())

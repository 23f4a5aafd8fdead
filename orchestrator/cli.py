"""The `orch` command: parse and dispatch, nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.contract.errors import OrchError, RunDirError, SpecError

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
    p.add_argument(
        "--cluster", choices=["local", "slurm"], default="local", help="where the controller runs"
    )
    p.add_argument(
        "--address",
        help="a Ray head's dashboard (http://HEAD:8265): run the controller there as a Ray job",
    )
    g = p.add_argument_group("--cluster slurm (one sbatch allocation: Ray inside, controller)")
    g.add_argument("--partition")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=0)
    g.add_argument("--cpus-per-task", type=int, default=2, help="CPUs per node")
    g.add_argument("--mem", help="memory per node, e.g. 64G")
    g.add_argument("--time", help="time limit, e.g. 24:00:00")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--signal-s", type=int, default=300, help="USR1 this long before the limit")
    g.add_argument("--dry-run", action="store_true", help="print the batch script, submit nothing")

    p = sub.add_parser("resume", help="continue a stopped run with its own resolved spec")
    p.add_argument("run", help="run name or directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--no-dashboard", action="store_true", help="embedded Ray without dashboard")
    p.add_argument("--ray-address", help="join this Ray cluster (a SLURM allocation's head)")

    p = sub.add_parser("cancel", help="cancel a run submitted to a cluster (SLURM or Ray job)")
    p.add_argument("run", help="run name or directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))

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
    p.add_argument(
        "--follow", action="store_true", help="a Ray job's driver log, streamed until it ends"
    )

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
    from orchestrator.logging_setup import setup_logging

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
        from orchestrator.contract.spec import load_spec
        from orchestrator.launch.submit import preflight, submit

        overrides = list(args.overrides)
        if getattr(args, "resume_from", None):
            overrides.append(f"training.resume_from={json.dumps(args.resume_from)}")
        if getattr(args, "init_from", None):
            hf = Path(args.init_from)
            hf = hf / "hf" if (hf / "hf").is_dir() else hf
            overrides.append(f"model.path={json.dumps(str(hf))}")
        spec = load_spec(args.job, overrides)
        if args.command == "submit" and args.cluster == "slurm":
            if args.address:
                raise SpecError("--address and --cluster slurm: choose one")
            return _submit_slurm(args, spec)
        if args.command == "submit" and args.address:
            return _submit_ray_job(args, spec)
        if args.command == "validate":
            from orchestrator.checks.validate import render_stats, validate_data

            preflight(spec, sample=0)  # model, DeepSpeed config, resume point
            render_stats(validate_data(spec, args.sample))
            logger.info("%s is valid", args.job)
            return 0
        return submit(spec, run_name=args.run_name, dashboard=not args.no_dashboard)
    if args.command == "results":
        from orchestrator.contract.layout import find_run
        from orchestrator.views.results import collect, render

        rundir = find_run(args.runs_dir, args.run)
        results = collect(rundir)
        if args.plot is not None:
            from orchestrator.views.plot import plot_results

            png = args.plot if args.plot.is_absolute() else rundir.path / args.plot
            logger.info("wrote %s", plot_results(results, png))
        if args.json:
            sys.stdout.write(json.dumps(results, indent=2) + "\n")
        else:
            render(results)
        return 0
    if args.command == "resume":
        from orchestrator.contract.layout import find_run
        from orchestrator.launch.submit import submit

        rundir = find_run(args.runs_dir, args.run)
        spec = rundir.read_spec()
        update: dict[str, Any] = {"runs_dir": rundir.path.parent}
        if args.ray_address:
            update["ray_address"] = args.ray_address
        spec = spec.model_copy(update=update)
        return submit(spec, run_name=rundir.name, dashboard=not args.no_dashboard)
    if args.command == "cancel":
        return _cancel(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "doctor":
        from dataclasses import asdict

        from orchestrator.checks.doctor import diagnose
        from orchestrator.checks.doctor import render as render_findings

        findings = diagnose(args.job, args.overrides, model=not args.no_model)
        if args.json:
            sys.stdout.write(json.dumps([asdict(f) for f in findings], indent=2) + "\n")
        else:
            render_findings(findings)
        return 1 if any(f.level == "error" for f in findings) else 0
    if args.command == "import-lmms":
        return _import_lmms(args)
    if args.command in ("status", "logs"):
        from orchestrator.contract.layout import find_run
        from orchestrator.launch import ray_job as cluster_ray
        from orchestrator.views.status import collect_status, log_files, render_status

        rundir = find_run(args.runs_dir, args.run)
        ray_job = cluster_ray.recorded_job(rundir)
        if args.command == "logs":
            if args.follow:
                if ray_job is None:
                    raise RunDirError("--follow streams a Ray job's log; use `tail -f` on files")
                cluster_ray.follow_logs(rundir)
                return 0
            if ray_job is not None:
                sys.stdout.write(
                    f"==> Ray job {ray_job['submission_id']} at {ray_job['address']} <==\n"
                    f"{cluster_ray.job_logs(rundir)}\n"
                )
            for path in log_files(rundir, args.eval):
                sys.stdout.write(f"==> {path} <==\n{path.read_text()}\n")
            return 0
        status = collect_status(rundir)
        status["ray_job"] = cluster_ray.job_status(rundir)
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
        from orchestrator.contract.layout import find_run
        from orchestrator.core.export import best_step, export_checkpoint

        rundir = find_run(args.runs_dir, args.run)
        step = best_step(rundir.path) if args.step == "best" else int(args.step)
        export_checkpoint(rundir.checkpoints, step, args.out, {"run": rundir.name})
        return 0
    raise AssertionError(args.command)


def _submit_slurm(args: argparse.Namespace, spec: Any) -> int:
    """Validate here, create the run directory, render the batch script into it, sbatch it."""
    from orchestrator.contract.atomic import atomic_write_json, atomic_write_text
    from orchestrator.contract.layout import new_run_name
    from orchestrator.launch.slurm_allocation import SbatchOptions, render_sbatch, submit_sbatch
    from orchestrator.launch.submit import open_run, preflight

    chosen = any(o.split("=", 1)[0].strip() == "evaluation.backend" for o in args.overrides)
    if spec.evaluation.backend == "ray" and not chosen:
        # On SLURM, eval parts get their own small allocations and never take the training
        # allocation's GPUs; `--set evaluation.backend='ray'` keeps them inside it.
        spec = spec.model_copy(
            update={"evaluation": spec.evaluation.model_copy(update={"backend": "slurm"})}
        )
        logger.info("evaluation.backend = 'slurm': eval parts run as their own SLURM jobs")
    preflight(spec)
    run_name = args.run_name or new_run_name(spec.name)
    run_path = (spec.runs_dir / run_name).resolve()
    options = SbatchOptions(
        job_name=f"orch-{run_path.name}",
        run_dir=run_path,
        python=sys.executable,
        workdir=Path.cwd(),
        nodes=args.nodes,
        cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_node,
        mem=args.mem,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        signal_s=args.signal_s,
    )
    rendered = render_sbatch(options)  # a bad option fails here, before anything is created
    if args.dry_run:
        sys.stdout.write(rendered)
        return 0
    open_run(spec, run_name)
    script = run_path / "slurm" / "train.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(script, rendered)
    job_id = submit_sbatch(script, run_path / "slurm" / "%j.log")
    atomic_write_json(run_path / "slurm" / "job.json", {"job_id": job_id, "script": str(script)})
    logger.info(
        "submitted %s as SLURM job %s; watch it with `orch status %s` or `squeue -j %s`; log: %s",
        run_path.name,
        job_id,
        run_path.name,
        job_id,
        run_path / "slurm" / f"{job_id}.log",
    )
    sys.stdout.write(f"{job_id}\n")
    return 0


def _submit_ray_job(args: argparse.Namespace, spec: Any) -> int:
    from orchestrator.launch.ray_job import submit_ray_job

    rundir, submission_id = submit_ray_job(spec, args.run_name, args.address)
    logger.info(
        "submitted %s as Ray job %s at %s; follow it with `orch logs %s --follow`, "
        "`orch status %s` or the dashboard",
        rundir.name,
        submission_id,
        args.address,
        rundir.name,
        rundir.name,
    )
    sys.stdout.write(f"{submission_id}\n")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    import subprocess

    from orchestrator.contract.layout import find_run
    from orchestrator.launch import ray_job as cluster_ray

    rundir = find_run(args.runs_dir, args.run)
    if cluster_ray.recorded_job(rundir) is not None:
        logger.info("%s", cluster_ray.stop_job(rundir))
        return 0
    job = rundir.path / "slurm" / "job.json"
    if not job.is_file():
        raise RunDirError(
            f"{rundir.path}: not submitted to a cluster (no slurm/job.json, no ray_job.json)"
        )
    job_id = json.loads(job.read_text())["job_id"]
    out = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RunDirError(f"scancel {job_id} failed: {out.stderr.strip()}")
    logger.info("cancelled SLURM job %s (run %s)", job_id, rundir.name)
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
    from orchestrator.contract.layout import find_run
    from orchestrator.core.on_demand import evaluate_on_demand, resolve_step
    from orchestrator.eval_backends.local import LocalBackend
    from orchestrator.views.results import render, step_record

    rundir = find_run(args.runs_dir, args.run)
    spec = rundir.read_spec()
    step = resolve_step(rundir, args.step)
    names = args.datasets.split(",") if args.datasets else list(spec.datasets)
    backend: Any
    if args.backend == "ray":
        import ray

        from orchestrator.eval_backends.ray_tasks import RayBackend

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
    from orchestrator.contract.errors import RunDirError
    from orchestrator.contract.layout import find_run
    from orchestrator.core.lmms_import import import_results
    from orchestrator.launch.submit import publish_now

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

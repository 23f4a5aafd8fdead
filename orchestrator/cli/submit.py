"""`orch submit JOB`: train and evaluate a job here, on a SLURM allocation, or as a Ray job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import Subparsers, add_spec_args, load_job_spec
from orchestrator.contract.errors import SpecError
from orchestrator.contract.layout import RunDir

logger = logging.getLogger("orch")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("submit", help="train and evaluate a job")
    add_spec_args(p)
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = load_job_spec(args, _checkpoint_overrides(args))
    if args.cluster == "slurm":
        if args.address:
            raise SpecError("--address and --cluster slurm: choose one")
        return _submit_slurm(args, spec)
    if args.address:
        return _submit_ray_job(args, spec)
    from orchestrator.launch.submit import submit

    return submit(spec, run_name=args.run_name, dashboard=not args.no_dashboard)


def _checkpoint_overrides(args: argparse.Namespace) -> list[str]:
    """--resume-from and --init-from as spec overrides."""
    overrides = []
    if args.resume_from:
        overrides.append(f"training.resume_from={json.dumps(args.resume_from)}")
    if args.init_from:
        hf = Path(args.init_from)
        hf = hf / "hf" if (hf / "hf").is_dir() else hf
        overrides.append(f"model.path={json.dumps(str(hf))}")
    return overrides


def _submit_slurm(args: argparse.Namespace, spec: Any) -> int:
    """Validate here, create the run directory, render the batch script into it, sbatch it."""
    from orchestrator.checks.capacity import check_fits, slurm_nodes
    from orchestrator.contract.atomic import atomic_write_json, atomic_write_text
    from orchestrator.contract.layout import new_run_name
    from orchestrator.launch.slurm_allocation import render_sbatch, submit_sbatch
    from orchestrator.launch.submit import open_run, preflight

    spec = _eval_on_slurm(args, spec)
    run_name = args.run_name or new_run_name(spec.name)
    run_path = (spec.runs_dir / run_name).resolve()
    rendered = render_sbatch(_sbatch_options(args, run_path))  # a bad option fails here, early
    # Training that the allocation cannot hold would wait for resources until its time limit.
    check_fits(
        spec,
        slurm_nodes(args.nodes, args.cpus_per_task, args.gpus_per_node),
        f"the allocation (--nodes {args.nodes} --cpus-per-task {args.cpus_per_task} "
        f"--gpus-per-node {args.gpus_per_node})",
        "ask for more with --nodes, --cpus-per-task or --gpus-per-node",
    )
    preflight(spec, run_path=run_path)
    if args.dry_run:
        sys.stdout.write(rendered)
        return 0
    open_run(spec, run_name)
    slurm_dir = RunDir(run_path).slurm_dir
    script = slurm_dir / "train.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(script, rendered)
    job_id = submit_sbatch(script, slurm_dir / "%j.log")
    atomic_write_json(slurm_dir / "job.json", {"job_id": job_id, "script": str(script)})
    logger.info(
        "submitted %s as SLURM job %s; watch it with `orch status %s` or `squeue -j %s`; log: %s",
        run_path.name,
        job_id,
        run_path.name,
        job_id,
        slurm_dir / f"{job_id}.log",
    )
    sys.stdout.write(f"{job_id}\n")
    return 0


def _eval_on_slurm(args: argparse.Namespace, spec: Any) -> Any:
    chosen = any(o.split("=", 1)[0].strip() == "evaluation.backend" for o in args.overrides)
    if spec.evaluation.backend != "ray" or chosen:
        return spec
    # On SLURM, eval parts get their own small allocations and never take the training
    # allocation's GPUs; `--set evaluation.backend='ray'` keeps them inside it.
    logger.info("evaluation.backend = 'slurm': eval parts run as their own SLURM jobs")
    return spec.model_copy(
        update={"evaluation": spec.evaluation.model_copy(update={"backend": "slurm"})}
    )


def _sbatch_options(args: argparse.Namespace, run_path: Path) -> Any:
    from orchestrator.launch.slurm_allocation import SbatchOptions

    return SbatchOptions(
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

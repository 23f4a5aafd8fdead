"""`orch plan JOB`: what a run will cost before it is submitted: steps, epochs and samples per
dataset, text and image tokens, checkpoints and eval parts, disk at the peak under retention,
and the training and evaluation FLOPs with the time and GPU-hours they take at a stated peak
and MFU. Nothing trains; every row is read (streamed), a sample of each dataset is encoded as
training encodes it.

Assumptions, all printed: the training FLOPs of a sample are those of workers/flops.py (the
PaLM convention: 3x the forward matmuls) on shapes measured from up to ``--sample`` rows of its
dataset; an eval sample costs one forward (generation's decoding steps are not counted); time is
FLOPs / (peak x MFU), the peak per training worker (``--peak-tflops``; by default an H100 SXM's
dense bf16 peak when training uses GPUs, none on CPUs) and ``--mfu`` (0.35 by default).

``--measure N`` runs the job for N real steps first (``orch submit`` of the job itself, one
checkpoint, its evals, in a run directory removed afterwards: orchestrator/launch/measure.py)
and predicts the wall time and GPU-hours from what that run took; the FLOPs estimate stays
beside it. Its assumptions are printed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from typing import Any

from orchestrator.cli.common import Subparsers, add_spec_args, load_job_spec
from orchestrator.contract.spec import JobSpec

logger = logging.getLogger("orch")

H100_SXM_BF16 = 989.4e12


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("plan", help="what a run will cost: steps, tokens, disk, FLOPs, time")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation")
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="peak TFLOP/s of one training worker (default: H100 SXM bf16 with use_gpu)",
    )
    p.add_argument("--sample", type=int, default=32, help="rows per dataset encoded (shapes)")
    p.add_argument(
        "--measure",
        type=int,
        metavar="N",
        help="run N real training steps, a checkpoint and its evals (orch submit of the job, "
        "in a run directory removed after) and predict the job's time from them",
    )
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="--measure: the measurement's embedded Ray without dashboard (as orch submit's)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.checks.disk import check_disk
    from orchestrator.checks.validate import validate_data
    from orchestrator.contract.errors import SpecError
    from orchestrator.contract.exitcodes import ExitCode
    from orchestrator.launch.measure import (
        MeasurementFailed,
        assumptions,
        check_measure_steps,
        measure,
        predict,
    )
    from orchestrator.launch.submit import preflight

    if not 0 < args.mfu <= 1:
        raise SpecError(f"--mfu: {args.mfu} is not in (0, 1]")
    if args.measure is not None:
        check_measure_steps(args.measure)  # before any work
    spec = load_job_spec(args)
    preflight(spec, sample=0)  # model, DeepSpeed config, resume point
    stats = validate_data(spec, 0)  # every row; no image decoded
    rows = {s.name: s.train for s in stats}
    steps = spec.training.steps_for(rows)
    if args.measure is not None:
        check_measure_steps(args.measure, steps)
    disk = check_disk(spec, steps, spec.runs_dir)
    shapes = _shapes(spec, args.sample)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (
        H100_SXM_BF16 if spec.training.use_gpu else None
    )  # fmt: skip
    plan = _plan(spec, stats, steps, disk, shapes, peak, args.mfu)
    if args.measure is not None:
        try:
            measured = measure(spec, args.measure, dashboard=not args.no_dashboard)
        except MeasurementFailed as e:
            logger.error("%s", e)
            return ExitCode.FAILED
        plan["measured"] = measured.to_json()
        plan["prediction"] = predict(measured, spec, steps)
        plan["assumptions"]["measure"] = assumptions(spec, measured, not args.no_dashboard)
    if args.json:
        sys.stdout.write(json.dumps(plan, indent=2) + "\n")
    else:
        _render(plan)
    return 0


def _shapes(spec: JobSpec, k: int) -> dict[str, dict[str, Any]]:
    """Per dataset: the mean training FLOPs, text tokens and image patches of one sample, from
    up to ``k`` rows encoded by its kind's collator (the data plane's encoders, as training)."""
    from transformers import AutoConfig

    from orchestrator.contract.kinds import get_kind
    from workers.data.index import open_index
    from workers.flops import train_step_flops

    config = AutoConfig.from_pretrained(spec.model.path)
    out: dict[str, dict[str, Any]] = {}
    for name, ds in spec.datasets.items():
        kind = get_kind(ds.kind)
        # Shapes of the training rows; an eval-only dataset's from its eval rows.
        # The index the pre-flight built (validate_data above): k rows read, not the manifest.
        rows = open_index(spec, name, "train" if ds.trained else "eval")
        chosen = random.Random(f"plan:{name}").sample(range(len(rows)), min(k, len(rows)))
        picked = [rows[i] for i in chosen]
        batch = kind.collator(spec)([(name, r) for r in picked])
        lengths = _lengths(batch, len(picked))
        grid = getattr(batch, "image_grid_thw", None)
        patches = [int(t * h * w) for t, h, w in grid.tolist()] if grid is not None else []
        if lengths is None:
            out[name] = {"known": False}
            continue
        flops = train_step_flops(
            config, patches, lengths, num_labels=getattr(ds, "head_classes", 0) or 0
        )["total"]
        merge = config.vision_config.spatial_merge_size**2
        out[name] = {
            "known": True,
            "train_flops": flops / len(picked),
            "tokens": sum(lengths) / len(picked),
            "image_tokens": sum(patches) / merge / len(picked),
            "sampled": len(picked),
        }
    return out


def _lengths(batch: Any, n: int) -> list[int] | None:
    """Each sample's sequence length in a collated batch: rows of a padded batch (an attention
    mask), or the segments of a packed one; None for a batch of neither shape (a plugin's)."""
    mask = getattr(batch, "attention_mask", None)
    if mask is not None and hasattr(mask, "sum") and not callable(mask):
        return [int(x) for x in mask.sum(-1).tolist()]
    segments = getattr(batch, "segments", None)
    if segments is not None:
        counts = segments[segments >= 0].bincount(minlength=n).tolist()
        return [int(c) for c in counts[:n]]
    return None


def _per_dataset(
    spec: JobSpec,
    stats: list[Any],
    steps: int,
    checkpoints: int,
    shapes: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], float, float]:
    """Each dataset's samples, epochs, eval samples and tokens; the training and eval FLOPs of
    the datasets whose shapes are known."""
    tr, ev = spec.training, spec.evaluation
    datasets: dict[str, Any] = {}
    train_flops = eval_flops = 0.0
    for st in stats:
        shape = shapes[st.name]
        samples = steps * tr.global_batch * st.share
        eval_samples = st.eval_subset * checkpoints * ev.during_training
        eval_samples += st.eval * ev.final_full
        row = {
            "train_rows": st.train,
            "share": st.share,
            "samples": round(samples),
            "epochs": samples / st.train if st.train else 0.0,
            "eval_rows": st.eval,
            "eval_samples": eval_samples,
        }
        if shape["known"]:
            row |= {k: shape[k] for k in ("tokens", "image_tokens")}
            row["train_tokens"] = round(samples * shape["tokens"])
            train_flops += samples * shape["train_flops"]
            eval_flops += eval_samples * shape["train_flops"] / 3  # one forward
        datasets[st.name] = row
    return datasets, train_flops, eval_flops


def _plan(
    spec: JobSpec,
    stats: list[Any],
    steps: int,
    disk: Any,
    shapes: dict[str, dict[str, Any]],
    peak: float | None,
    mfu: float,
) -> dict[str, Any]:
    tr, ev = spec.training, spec.evaluation
    checkpoints = tr.checkpoint_steps(steps)
    datasets, train_flops, eval_flops = _per_dataset(spec, stats, steps, len(checkpoints), shapes)
    known = all(shapes[st.name]["known"] for st in stats)
    eval_rounds = len(checkpoints) * ev.during_training + ev.final_full
    plan: dict[str, Any] = {
        "steps": steps,
        "global_batch": tr.global_batch,
        "datasets": datasets,
        "checkpoints": {
            "count": len(checkpoints),
            "state_bytes": disk.state_bytes,
            "hf_bytes": disk.hf_bytes,
            "peak_bytes": disk.peak_bytes,
        },
        "eval_parts": len(spec.part_names) * eval_rounds,  # datasets and lmms-eval tasks
        "flops": {"train": train_flops if known else None, "eval": eval_flops if known else None},
        "assumptions": {
            "peak_flops_per_worker": peak,
            "mfu": mfu,
            "eval": "one forward per eval sample; decoding steps not counted",
        },
    }
    if known and peak is not None:
        train_s = train_flops / (peak * mfu * tr.num_workers)
        eval_s = eval_flops / (peak * mfu)
        gpus = tr.num_workers if tr.use_gpu else 0
        plan["time"] = {
            "train_s": train_s,
            "eval_s": eval_s,
            "train_gpu_hours": train_s / 3600 * gpus,
            "eval_gpu_hours": eval_s / 3600 * max(ev.gpus_per_part, 0.0),
        }
    else:
        plan["time"] = None
    return plan


def _render(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from orchestrator.diskuse import human_bytes

    console = Console()
    table = Table(title=f"{plan['steps']} steps of {plan['global_batch']} samples")
    for col in ("dataset", "rows", "share", "samples", "epochs", "tokens/sample", "image tok"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for name, d in plan["datasets"].items():
        table.add_row(
            name, f"{d['train_rows']:,}", f"{d['share']:.1%}", f"{d['samples']:,}",
            f"{d['epochs']:.2f}", f"{d.get('tokens', float('nan')):.0f}",
            f"{d.get('image_tokens', float('nan')):.0f}",
        )  # fmt: skip
    console.print(table)
    c = plan["checkpoints"]
    console.print(
        f"checkpoints: {c['count']} of {human_bytes(c['state_bytes'] + c['hf_bytes'])} "
        f"({human_bytes(c['state_bytes'])} DeepSpeed state, {human_bytes(c['hf_bytes'])} HF "
        f"weights), {human_bytes(c['peak_bytes'])} at the peak; {plan['eval_parts']} eval parts"
    )
    _render_flops(console, plan)
    if "prediction" in plan:
        _render_measured(console, plan)


def _render_flops(console: Any, plan: dict[str, Any]) -> None:
    f, a = plan["flops"], plan["assumptions"]
    if f["train"] is None:
        console.print("FLOPs: unknown (a dataset's kind batches are of no known shape)")
        return
    console.print(f"FLOPs: {f['train']:.3e} training, {f['eval']:.3e} evaluation ({a['eval']})")
    t = plan["time"]
    if t is None:
        console.print("time: no peak for CPU workers; give --peak-tflops (per training worker)")
        return
    console.print(
        f"time at {a['peak_flops_per_worker'] / 1e12:.3g} TFLOP/s per worker and MFU "
        f"{a['mfu']:.2f}: training {_duration(t['train_s'])} ({t['train_gpu_hours']:.1f} "
        f"GPU-h), evaluation {_duration(t['eval_s'])} ({t['eval_gpu_hours']:.1f} GPU-h)"
    )


def _render_measured(console: Any, plan: dict[str, Any]) -> None:
    from rich.table import Table

    m, p = plan["measured"], plan["prediction"]
    table = Table(title=f"measured: {m['steps']} steps, one checkpoint, its evals")
    table.add_column("figure")
    table.add_column("seconds", justify="right")
    for label, key in (
        ("whole measurement run", "wall_s"),
        ("start-up (launch to the training loop)", "startup_s"),
        ("first step", "first_step_s"),
        ("steady step", "step_s"),
        ("checkpoint", "checkpoint_s"),
        ("checkpoint eval, first (to published)", "ckpt_eval_s"),
        ("checkpoint eval, later", "ckpt_eval_warm_s"),
        ("final full eval", "final_eval_s"),
        ("after the last eval to exit", "after_evals_s"),
    ):
        value = m[key]
        table.add_row(label, "-" if value is None else f"{value:.3f}")
    console.print(table)
    table = Table(title=f"predicted: {p['steps']} steps, {p['checkpoints']} checkpoints")
    table.add_column("part")
    table.add_column("time", justify="right")
    rows: tuple[tuple[str, str | None], ...] = (
        ("start-up and first step", None),
        (f"{p['steps'] - 1} more steps", "steps_s"),
        (f"{p['checkpoints']} checkpoints", "checkpoints_s"),
        ("training (launch to the last checkpoint)", "train_s"),
        ("checkpoint evals (beside training)", "ckpt_evals_s"),
        ("of which waiting for an eval lane", "ckpt_eval_wait_s"),
        ("after training (last evals, final eval, shutdown)", "after_training_s"),
        ("wall time", "wall_s"),
    )
    for part, figure in rows:
        seconds = p["startup_s"] + p["first_step_s"] if figure is None else p[figure]
        table.add_row(part, _duration(seconds))
    console.print(table)
    console.print(
        f"GPU-hours: {p['train_gpu_hours']:.2f} training, {p['eval_gpu_hours']:.2f} evaluation "
        f"({p['eval_task_s']:.1f} s of eval parts)"
    )
    console.print("assumptions:")
    for line in plan["assumptions"]["measure"]:
        console.print(f"  - {line}", markup=False, highlight=False)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

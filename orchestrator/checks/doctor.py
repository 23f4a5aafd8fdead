"""`orch doctor JOB.toml`: the checks that catch a bad run before it burns GPU hours, each
finding with its fix. Errors make the exit code 1; warnings and notes do not."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.contract.errors import OrchError
from orchestrator.contract.spec import JobSpec, load_spec


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning", "ok"]
    check: str
    message: str
    fix: str = ""


def diagnose(job: Path, overrides: list[str], *, model: bool = True) -> list[Finding]:
    try:
        spec = load_spec(job, overrides)
    except OrchError as e:
        return [Finding("error", "spec", str(e), "fix the keys named above")]
    findings = [
        *check_attention(spec),
        *check_schedule(spec),
        *check_deepspeed(spec),
    ]
    data_ok = check_data(spec, findings)
    if model and data_ok and not any(f.level == "error" for f in findings):
        findings += check_masking(spec)
    return findings


def check_attention(spec: JobSpec) -> list[Finding]:
    want = spec.model.attn_implementation
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if want == "flash_attention_2" and not has_flash:
        return [
            Finding(
                "error",
                "attention",
                "flash_attention_2 requested but flash_attn is not importable",
                'set model.attn_implementation = "auto" (sdpa) or '
                "install flash-attn built for this torch and CUDA",
            )
        ]
    if want == "flash_attention_2" and not spec.training.use_gpu:
        return [
            Finding(
                "error",
                "attention",
                "flash_attention_2 needs a GPU",
                'set model.attn_implementation = "auto" for CPU runs',
            )
        ]
    choice = want if want != "auto" else ("flash_attention_2" if has_flash else "sdpa")
    return [Finding("ok", "attention", f"{want} -> {choice}")]


def check_schedule(spec: JobSpec) -> list[Finding]:
    tr = spec.training
    out: list[Finding] = []
    if tr.max_steps is not None and tr.warmup_steps >= tr.max_steps:
        out.append(
            Finding(
                "error",
                "schedule",
                f"warmup_steps ({tr.warmup_steps}) >= max_steps "
                f"({tr.max_steps}): the learning rate never reaches training.lr",
                "lower training.warmup_steps (a few % of the steps is usual)",
            )
        )
    elif tr.max_steps is not None and tr.warmup_steps > 0.2 * tr.max_steps:
        out.append(
            Finding(
                "warning",
                "schedule",
                f"warm-up is {tr.warmup_steps / tr.max_steps:.0%} of training",
                "a few % of the steps is usual",
            )
        )
    if not 1e-7 <= tr.lr <= 1e-1:
        out.append(
            Finding(
                "warning",
                "schedule",
                f"lr {tr.lr:g} is outside [1e-7, 1e-1]",
                "full fine-tuning of a VLM uses ~1e-5; a head from scratch ~1e-3",
            )
        )
    if tr.max_steps is not None and tr.checkpoint_every > tr.max_steps:
        out.append(
            Finding(
                "warning",
                "schedule",
                "checkpoint_every > max_steps: only the last step is checkpointed and evaluated",
                "lower training.checkpoint_every",
            )
        )
    return out or [Finding("ok", "schedule", f"lr {tr.lr:g}, warm-up {tr.warmup_steps} steps")]


def check_deepspeed(spec: JobSpec) -> list[Finding]:
    from workers.deepspeed_config import build_deepspeed_config

    tr = spec.training
    try:
        cfg = build_deepspeed_config(tr, tr.num_workers)
    except OrchError as e:
        return [
            Finding("error", "deepspeed", str(e), "make the DeepSpeed JSON agree with the spec")
        ]
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    msg = (
        f"ZeRO-{stage}; micro-batch {tr.batch_size} x accumulation {tr.grad_accum} x "
        f"{tr.num_workers} workers = global batch {cfg['train_batch_size']}"
    )
    out = [Finding("ok", "deepspeed", msg)]
    if tr.bf16 and not tr.use_gpu:
        out.append(
            Finding(
                "warning",
                "deepspeed",
                "bf16 on CPU is slow and less tested",
                "set training.bf16 = false for CPU runs",
            )
        )
    return out


def check_data(spec: JobSpec, findings: list[Finding]) -> bool:
    from orchestrator.launch.submit import preflight
    from workers.data.manifest import read_manifest

    try:
        sizes = preflight(spec)
    except OrchError as e:
        findings.append(Finding("error", "data", str(e), "fix or regenerate the named rows"))
        return False
    for name, ds in spec.datasets.items():
        if ds.kind != "classification":
            continue
        labels = {s.label for s in read_manifest(ds.train, name, ds.classes)}
        absent = sorted(set(range(ds.classes)) - labels)
        if absent:
            shown = ", ".join(map(str, absent[:10])) + (" ..." if len(absent) > 10 else "")
            findings.append(
                Finding(
                    "warning",
                    "labels",
                    f"{name}: {len(absent)} of "
                    f"{ds.num_classes} classes never appear in train ({shown})",
                    "check num_classes or the manifest",
                )
            )
    total = sum(sizes.values())
    findings.append(
        Finding(
            "ok",
            "data",
            ", ".join(f"{n} {k}" for n, k in sizes.items()) + f" train samples ({total} in all)",
        )
    )
    return True


def check_masking(spec: JobSpec) -> list[Finding]:
    """One real batch per dataset through the model: masked losses finite, predictions in range."""
    import torch

    from workers.data.encode import ClassificationEncoder
    from workers.data.manifest import read_manifest
    from workers.models.classifier import build_classifier, classification_loss

    m = spec.model
    model = build_classifier(m.path, spec.num_labels, m.pooling, m.attn_implementation).eval()
    encoder = ClassificationEncoder(m.path, m.prompt, m.min_pixels, m.max_pixels)
    classes = {n: d.classes for n, d in spec.datasets.items()}
    out = []
    for name, ds in spec.datasets.items():
        if ds.kind == "vqa":
            out.append(check_vqa_batch(spec, name, model))
            continue
        batch = encoder.encode(read_manifest(ds.train, name, ds.classes)[:4], classes)
        with torch.no_grad():
            logits = model(**batch.model_inputs(torch.device("cpu"), torch.float32))
        loss, masked = classification_loss(logits, batch.labels, batch.num_classes, batch.ids)
        worst = float(loss.max())
        if not math.isfinite(worst) or (masked.argmax(-1) >= batch.num_classes).any():
            out.append(
                Finding(
                    "error",
                    "masking",
                    f"{name}: non-finite loss or prediction "
                    "outside the dataset's classes on a real batch",
                    "run with -v and inspect the model and data",
                )
            )
        else:
            out.append(
                Finding(
                    "ok",
                    "masking",
                    f"{name}: finite losses (max {worst:.3f}) on a "
                    f"real batch, predictions within {ds.num_classes} classes",
                )
            )
    return out


def check_vqa_batch(spec: JobSpec, name: str, model: Any) -> Finding:
    """Four real VQA samples packed into one row: every sample has supervised answer tokens, and
    the losses are finite."""
    import torch

    from workers.data.microbatch import Batcher
    from workers.data.vqa import per_sample_loss, read_vqa_manifest

    ds = spec.datasets[name]
    samples, counts = read_vqa_manifest(ds.train, name, ds.image_roots, ds.min_ratings)
    batcher = Batcher(spec, {name: samples})
    try:
        batch = batcher.build([(name, i) for i in range(min(4, len(samples)))]).vqa
        assert batch is not None
        attn = str(model.hf_config._attn_implementation)
        with torch.no_grad():
            logits = model(
                **batch.model_inputs(torch.device("cpu"), torch.float32, attn),
                targets=batch.targets,
            )
        loss, _ = per_sample_loss(logits, batch.targets, batch.segments, batch.n_samples)
    except ValueError as e:
        return Finding("error", "vqa", f"{name}: {e}", "check the chat template and the data")
    answer_tokens = int((batch.targets != -100).sum())
    if not bool(torch.isfinite(loss).all()):
        return Finding(
            "error", "vqa", f"{name}: non-finite loss on a real packed batch", "run with -v"
        )
    dropped = (
        f"; quality filter dropped {counts.turns_dropped} turns" if counts.turns_dropped else ""
    )
    return Finding(
        "ok",
        "vqa",
        f"{name}: {batch.n_samples} samples packed into {len(batch.rows)} row(s), "
        f"{answer_tokens} answer tokens supervised, finite losses (max {float(loss.max()):.3f})"
        f"{dropped}",
    )


def render(findings: list[Finding]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="orch doctor")
    for col in ("", "check", "finding", "fix"):
        table.add_column(col)
    style = {"error": "bold red", "warning": "yellow", "ok": "green"}
    for f in findings:
        table.add_row(f.level.upper(), f.check, f.message, f.fix, style=style[f.level])
    Console().print(table)

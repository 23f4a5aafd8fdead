"""`orch doctor JOB.toml`: the checks that catch a bad run before it burns GPU hours, each
finding with its fix. Errors make the exit code 1; warnings and notes do not."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from orchestrator.contract.errors import OrchError
from orchestrator.contract.kinds import Finding, get_kind
from orchestrator.contract.spec import JobSpec, load_spec


def diagnose(job: Path, overrides: list[str], *, model: bool = True) -> list[Finding]:
    try:
        spec = load_spec(job, overrides)
    except OrchError as e:
        return [Finding("error", "spec", str(e), "fix the keys named above")]
    findings = [
        *check_attention(spec),
        *check_schedule(spec),
        *check_deepspeed(spec),
        *check_lmms(spec),
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
    from orchestrator.contract.deepspeed import build_deepspeed_config

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


def check_lmms(spec: JobSpec) -> list[Finding]:
    """[evaluation.lmms]: its Python imports lmms-eval and orch's model class, and knows every
    task (asked in that environment, a few seconds)."""
    lmms = spec.evaluation.lmms
    if lmms is None:
        return []
    from workers.lmms.part import LmmsPartError, check_environment, lmms_python

    missing = [str(p) for p in lmms.include_path if not p.is_dir()]
    if missing:
        return [Finding("error", "lmms", f"evaluation.lmms.include_path: no folder {missing}",
                        "fix the paths (folders of task YAMLs)")]  # fmt: skip
    try:
        python = lmms_python(lmms.model_dump(mode="json"))
        found = check_environment(python, lmms.tasks, [str(p) for p in lmms.include_path])
    except LmmsPartError as e:
        return [Finding("error", "lmms", str(e), "run `make lmms`, or set evaluation.lmms.python")]
    if found["unknown_tasks"]:
        return [
            Finding(
                "error",
                "lmms",
                f"lmms-eval {found['lmms_eval']} knows no task {found['unknown_tasks']}",
                "check evaluation.lmms.tasks, and include_path for your own task YAMLs",
            )
        ]
    return [
        Finding(
            "ok",
            "lmms",
            f"lmms-eval {found['lmms_eval']} in {python}: "
            f"{len(lmms.tasks)} task(s) found, model {lmms.model}",
        )
    ]


def check_data(spec: JobSpec, findings: list[Finding]) -> bool:
    """Every row (pre-flight), then each dataset's kind's own data checks."""
    from orchestrator.launch.submit import preflight

    try:
        sizes = preflight(spec, run_path=spec.runs_dir)
    except OrchError as e:
        findings.append(Finding("error", "data", str(e), "fix or regenerate the named rows"))
        return False
    for name, ds in spec.datasets.items():
        findings += get_kind(ds.kind).doctor(spec, name, None)
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
    """One real batch per dataset through the model (each kind's model checks: masked losses
    finite and predictions in range for classification, packed answers for vqa ...)."""
    model = _build_model(spec)
    return [f for n, d in spec.datasets.items() for f in get_kind(d.kind).doctor(spec, n, model)]


def _build_model(spec: JobSpec) -> Any:
    """The model a training worker would build, here on the CPU (the real-batch check runs
    data-plane code in this process on purpose: see tests/test_import_boundary.py)."""
    from workers.models.classifier import build_classifier

    m = spec.model
    return build_classifier(m.path, spec.num_labels, m.pooling, m.attn_implementation).eval()


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

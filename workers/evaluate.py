"""The eval entry point a backend runs: one (checkpoint, dataset) -> one result file.

It runs unchanged as a Ray task, a SLURM job or a plain subprocess
(``python -m workers.evaluate PART.json``). The dataset's kind reads the rows, draws the seeded
subset (``eval_ratio``; all of it for a full eval) and evaluates them into per-sample records;
each declared metric is aggregated over those records (orchestrator.contract.metrics); the
result is written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.kinds import get_kind
from orchestrator.contract.metrics import aggregate, get_metric
from orchestrator.contract.plugins import load_plugins
from orchestrator.contract.records import LMMS_KIND, SCHEMA_VERSION
from orchestrator.contract.spec import DatasetSpec

logger = logging.getLogger("orch.evaluate")


def checkpoint_digest(hf_dir: Path) -> str:
    """A short digest of the checkpoint's weights and head, recorded with every result (the
    train loop computes it once at save time; parts of older checkpoints compute it here)."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in hf_dir.iterdir() if p.suffix in {".safetensors", ".pt"}):
        with (hf_dir / name).open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_for(device: torch.device, requested: str = "auto") -> torch.dtype:
    """``requested`` (evaluation.dtype), or for "auto": bf16 on a GPU, fp32 on the CPU."""
    if requested != "auto":
        return DTYPES[requested]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def param_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype the model was loaded in (inputs such as pixel values are cast to it)."""
    return next(model.parameters()).dtype


def eval_device(part: EvalPart) -> torch.device:
    """The device this part was given: CUDA when the backend gave it a GPU (the backend made
    only that GPU visible), else the CPU, even on a machine with GPUs (they are training's)."""
    if part.gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        import os

        raise RuntimeError(
            f"this eval part was given {part.gpus:g} GPU(s) (evaluation.gpus_per_part) but CUDA "
            f"is not available in its process (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}); check that the backend's "
            "nodes have GPUs, or set evaluation.gpus_per_part = 0 to evaluate on the CPU"
        )
    return torch.device("cuda")


@torch.no_grad()
def run_eval(part: EvalPart) -> dict[str, Any]:
    """Evaluate one part and write its result file; return the result."""
    if part.kind == LMMS_KIND:  # an lmms-eval task, in lmms-eval's environment
        from workers.lmms.part import run_lmms_part

        return run_lmms_part(part)
    started_at, t0 = time.time(), time.perf_counter()
    model, device = load_model(part)
    return evaluate_part(part, model, device, started_at, t0, time.perf_counter() - t0)


@torch.no_grad()
def run_evals(parts: list[EvalPart]) -> list[dict[str, Any] | BaseException]:
    """Evaluate several parts of one checkpoint with one model load (evaluation.group_parts).
    Each part still writes its own result file; a part that fails leaves the others alone and
    its error takes its place in the list (the backend reports it; the controller retries that
    part alone)."""
    if not parts:
        return []
    if any(p.kind == LMMS_KIND for p in parts):
        # lmms-eval tasks share one lmms-eval process (one load with orch's model class), the
        # group's dataset parts one load of their own.
        from workers.lmms.part import run_lmms_parts

        native = iter(run_evals([p for p in parts if p.kind != LMMS_KIND]))
        tasks = [p for p in parts if p.kind == LMMS_KIND]
        try:
            done = iter(run_lmms_parts(tasks))
        # The lmms-eval process failed as a whole (it could not start, or timed out): the error
        # is every task's outcome; the group's dataset parts keep theirs.
        except Exception as e:
            logger.exception("lmms-eval parts of step %d failed", tasks[0].step)
            done = iter([e] * len(tasks))
        return [next(done) if p.kind == LMMS_KIND else next(native) for p in parts]
    first = parts[0]
    for p in parts[1:]:
        if (p.checkpoint, p.model_spec, p.gpus, p.dtype) != (
            first.checkpoint, first.model_spec, first.gpus, first.dtype
        ):  # fmt: skip
            raise ValueError(
                f"parts grouped for one model load must share checkpoint, model, GPUs and dtype: "
                f"{p.dataset} differs from {first.dataset}"
            )
    started_at, t0 = time.time(), time.perf_counter()
    model, device = load_model(first)
    t_load = time.perf_counter() - t0
    logger.info("one model load (%.2f s) for %d parts of step %d", t_load, len(parts), first.step)
    results: list[dict[str, Any] | BaseException] = []
    for i, part in enumerate(parts):
        part_started, part_t0 = (started_at, t0) if i == 0 else (time.time(), time.perf_counter())
        try:
            results.append(
                evaluate_part(part, model, device, part_started, part_t0, t_load if i == 0 else 0.0)
            )
        # One part's bad data must not cost the group's other parts: its error is its outcome.
        except Exception as e:
            logger.exception("eval part %s of step %d failed", part.dataset, part.step)
            results.append(e)
    return results


def load_model(part: EvalPart) -> tuple[torch.nn.Module, torch.device]:
    """The checkpoint's model on the part's device, in its dtype (plugins loaded first)."""
    from workers.models.classifier import load_classifier

    load_plugins(part.plugins)  # the job's kinds and metrics, in this process too
    device = eval_device(part)
    model = load_classifier(Path(part.checkpoint), part.model_section().attn_implementation)
    model = model.to(device, dtype_for(device, part.dtype)).eval()
    logger.info("step %d loaded on %s (%s)", part.step, device, param_dtype(model))
    return model, device


def eval_rows(part: EvalPart, ds: DatasetSpec) -> Sequence[Any]:
    """A part's eval rows: their index (built by the pre-flight, or now), or, for a part
    without one, the manifest read whole."""
    if part.index_root is None:
        return get_kind(part.kind).read(part.dataset, ds, "eval", ())
    from workers.data.index import ensure_index

    return ensure_index(part.dataset, ds, "eval", (), Path(part.index_root))


@torch.no_grad()
def evaluate_part(
    part: EvalPart,
    model: torch.nn.Module,
    device: torch.device,
    started_at: float,
    t0: float,
    t_load: float,
) -> dict[str, Any]:
    """One part on a loaded model: its kind's records, the declared metrics, the result file."""
    load_plugins(part.plugins)
    kind = get_kind(part.kind)
    ds = part.dataset_section()
    rows = kind.eval_subset(eval_rows(part, ds), part.eval_ratio, part.seed)
    output = kind.evaluate(part, model, rows, device)
    values = {m: aggregate(get_metric(m), output.records) for m in part.metrics}
    result = {
        "schema": SCHEMA_VERSION,
        "step": part.step,
        "dataset": part.dataset,
        "kind": part.kind,
        "partial": part.partial,
        "eval_ratio": part.eval_ratio,
        "n": len(output.records),
        **correct_count(output.records),
        "metrics": {m: v.value for m, v in values.items()},
        "stderr": {m: v.stderr for m, v in values.items()},
        "breakdowns": output.breakdowns,
        "samples": output.examples,
        **provenance(part, started_at, t0, t_load),
        "device": {"type": device.type, "dtype": str(param_dtype(model)).removeprefix("torch.")},
    }
    atomic_write_json(Path(part.out), result)
    shown = ", ".join(f"{m} {v.value:.4f}" for m, v in values.items())
    logger.info("%s step %d: %s on %d samples", part.dataset, part.step, shown, result["n"])
    return result


def correct_count(records: list[dict[str, Any]]) -> dict[str, int]:
    """{"correct": k} when the kind's records say which samples were right (as schema 1 parts
    did), else nothing."""
    if records and all("correct" in r for r in records):
        return {"correct": int(sum(float(r["correct"]) for r in records))}
    return {}


def provenance(part: EvalPart, started_at: float, t0: float, t_load: float) -> dict[str, Any]:
    """The fields every result has: which checkpoint (by digest), where and when it was made."""
    return {
        "checkpoint": part.checkpoint,
        "checkpoint_digest": part.checkpoint_digest or checkpoint_digest(Path(part.checkpoint)),
        "backend": part.backend,
        "attempt": part.attempt,
        "timings": {
            "load_s": t_load,
            "total_s": time.perf_counter() - t0,
            "started_at": started_at,
            "finished_at": time.time(),
        },
    }


def generate_answers(
    model: Any, encoder: Any, prompts: list[Any], max_new_tokens: int, device: torch.device
) -> list[str]:
    """Greedy answers for a batch of prompts (left-padded, as generation needs)."""
    width = max(p.n_tokens for p in prompts)
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - p.n_tokens :] = p.input_ids
        mask[i, width - p.n_tokens :] = 1
    eos = encoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, mask = ids.to(device), mask.to(device)
    vision: dict[str, torch.Tensor] = {}
    # Text-only prompts (multiple-choice rows without an image) pass no vision input at all:
    # generate() runs the vision tower on any pixel_values it is given, even None or empty.
    if any(p.image_grid_thw.shape[0] for p in prompts):
        vision = {
            "pixel_values": torch.cat([p.pixel_values for p in prompts]).to(
                device, param_dtype(model)
            ),
            "image_grid_thw": torch.cat([p.image_grid_thw for p in prompts]).to(device),
        }
    out = model.vlm.generate(
        input_ids=ids,
        attention_mask=mask,
        **vision,
        mm_token_type_ids=(ids == encoder.image_token_id).int(),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=encoder.pad_id,
    )
    return [
        str(encoder.tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one orch eval part from its JSON.")
    parser.add_argument("job", type=Path, help="the eval part as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    run_eval(EvalPart.from_json(json.loads(args.job.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

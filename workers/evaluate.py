"""The eval entry point a backend runs: one (checkpoint, dataset) -> one result file.

It runs unchanged as a Ray task, a SLURM job or a plain subprocess
(``python -m workers.evaluate JOB.json``). Partial evals use a seeded, stratified subset of
``eval_ratio`` of the eval manifest; full evals use all of it. The result is written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalJob
from workers.data.encode import ClassificationEncoder
from workers.data.manifest import Sample, read_manifest
from workers.data.vqa import (
    EncodedVQA,
    ImageConfig,
    VQAEncoder,
    VQASample,
    pack,
    per_sample_loss,
    read_vqa_manifest,
)
from workers.metrics import accuracy, exact_match, mean_with_stderr, per_class_accuracy
from workers.models.classifier import VLMClassifier, classification_loss, load_classifier

logger = logging.getLogger("orch.evaluate")
SCHEMA_VERSION = 1


def stratified_subset(samples: list[Sample], ratio: float, seed: int) -> list[Sample]:
    """Seeded subset of ``ratio`` of the samples, the same share of every class (at least one)."""
    if ratio >= 1.0:
        return samples
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label]
        k = max(1, round(len(group) * ratio))
        idx = sorted(rng.choice(len(group), size=k, replace=False).tolist())
        chosen.extend(group[i] for i in idx)
    return chosen


def checkpoint_digest(hf_dir: Path) -> str:
    """A short digest of the checkpoint's weights and head, recorded with every result."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in hf_dir.iterdir() if p.suffix in {".safetensors", ".pt"}):
        with (hf_dir / name).open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


@torch.no_grad()
def run_eval(job: EvalJob) -> dict[str, Any]:
    if job.kind == "vqa":
        return run_vqa_eval(job)
    started_at = time.time()
    t0 = time.perf_counter()
    hf_dir = Path(job.checkpoint)
    samples = read_manifest(Path(job.manifest), job.dataset, job.num_classes)
    subset = stratified_subset(samples, job.eval_ratio, job.seed)
    model = load_classifier(hf_dir, job.attn_implementation).eval()
    encoder = ClassificationEncoder(hf_dir, job.prompt, job.min_pixels, job.max_pixels)
    t_load = time.perf_counter() - t0
    losses: list[float] = []
    correct: list[bool] = []
    top5: list[bool] = []
    for start in range(0, len(subset), job.batch_size):
        batch = encoder.encode(
            subset[start : start + job.batch_size], {job.dataset: job.num_classes}
        )
        logits = model(**batch.model_inputs(torch.device("cpu"), torch.float32))
        loss, masked = classification_loss(logits, batch.labels, batch.num_classes, batch.ids)
        losses.extend(loss.tolist())
        correct.extend((masked.argmax(-1) == batch.labels).tolist())
        k = min(5, job.num_classes)
        top5.extend((masked.topk(k, dim=-1).indices == batch.labels[:, None]).any(-1).tolist())
    n = len(subset)
    acc, top5_acc, mean_loss = accuracy(correct), accuracy(top5), mean_with_stderr(losses)
    labels = [s.label for s in subset]
    preds = [y if ok else -1 for y, ok in zip(labels, correct, strict=True)]
    per_class = {str(k): v for k, v in per_class_accuracy(labels, preds).items()}
    result = {
        "schema": SCHEMA_VERSION,
        "step": job.step,
        "dataset": job.dataset,
        "partial": job.partial,
        "eval_ratio": job.eval_ratio,
        "n": n,
        "correct": int(sum(correct)),
        "metrics": {
            "loss": mean_loss.value,
            "accuracy": acc.value,
            "top5_accuracy": top5_acc.value,
            "per_class_accuracy": per_class,
        },
        "stderr": {
            "accuracy": acc.stderr,
            "top5_accuracy": top5_acc.stderr,
            "loss": mean_loss.stderr,
        },
        **provenance(job, started_at, t0, t_load),
    }
    atomic_write_json(Path(job.out), result)
    logger.info("%s step %d: accuracy %.4f on %d samples", job.dataset, job.step, acc.value, n)
    return result


def provenance(job: EvalJob, started_at: float, t0: float, t_load: float) -> dict[str, Any]:
    """The fields every result has: which checkpoint (by digest), where and when it was made."""
    return {
        "checkpoint": job.checkpoint,
        "checkpoint_digest": checkpoint_digest(Path(job.checkpoint)),
        "backend": job.backend,
        "attempt": job.attempt,
        "timings": {
            "load_s": t_load,
            "total_s": time.perf_counter() - t0,
            "started_at": started_at,
            "finished_at": time.time(),
        },
    }


def vqa_subset(samples: list[VQASample], ratio: float, seed: int) -> list[VQASample]:
    """Seeded subset of ``ratio`` of the samples, stratified by reference answer."""
    if ratio >= 1.0:
        return samples
    rng = np.random.default_rng(seed)
    by_answer: dict[str, list[VQASample]] = {}
    for s in samples:
        by_answer.setdefault(s.turns[-1].assistant.strip().lower(), []).append(s)
    chosen: list[VQASample] = []
    for answer in sorted(by_answer):
        group = by_answer[answer]
        k = max(1, round(len(group) * ratio))
        chosen.extend(group[i] for i in sorted(rng.choice(len(group), size=k, replace=False)))
    return chosen


def generate_answers(
    model: VLMClassifier, encoder: VQAEncoder, prompts: list[EncodedVQA], max_new_tokens: int
) -> list[str]:
    """Greedy answers for a batch of prompts (left-padded, as generation needs)."""
    width = max(p.n_tokens for p in prompts)
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - p.n_tokens :] = p.input_ids
        mask[i, width - p.n_tokens :] = 1
    eos = encoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = model.vlm.generate(  # type: ignore[operator]
        input_ids=ids,
        attention_mask=mask,
        pixel_values=torch.cat([p.pixel_values for p in prompts]),
        image_grid_thw=torch.cat([p.image_grid_thw for p in prompts]),
        mm_token_type_ids=(ids == encoder.image_token_id).int(),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=encoder.pad_id,
    )
    return [
        str(encoder.tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out
    ]


def run_vqa_eval(job: EvalJob) -> dict[str, Any]:
    """Generated answers scored by exact match (lmms-eval's definition, case-insensitive and
    stripped), and the teacher-forced loss of the reference answers."""
    started_at = time.time()
    t0 = time.perf_counter()
    hf_dir = Path(job.checkpoint)
    roots = [Path(r) for r in job.image_roots]
    samples, _ = read_vqa_manifest(Path(job.manifest), job.dataset, roots, job.min_ratings)
    subset = vqa_subset(samples, job.eval_ratio, job.seed)
    model = load_classifier(hf_dir, job.attn_implementation).eval()
    attn = str(model.hf_config._attn_implementation)
    encoder = VQAEncoder(hf_dir)
    cfg = ImageConfig(job.max_image_side, job.min_image_side, job.tile_size, job.max_tiles)
    t_load = time.perf_counter() - t0
    predictions: list[str] = []
    losses: list[float] = []
    for start in range(0, len(subset), job.batch_size):
        chunk = subset[start : start + job.batch_size]
        prompts = [encoder.encode_prompt(s, cfg) for s in chunk]
        predictions += generate_answers(model, encoder, prompts, job.max_new_tokens)
        full = [encoder.encode(s, cfg) for s in chunk]
        packed = pack(
            full,
            [[i] for i in range(len(full))],
            encoder.image_token_id,
            encoder.merge,
            encoder.pad_id,
        )
        logits = model(
            **packed.model_inputs(torch.device("cpu"), torch.float32, attn), targets=packed.targets
        )
        loss, _ = per_sample_loss(logits, packed.targets, packed.segments, packed.n_samples)
        losses.extend(loss.tolist())
    references = [s.turns[-1].assistant for s in subset]
    em = exact_match(predictions, references)
    mean_loss = mean_with_stderr(losses)
    scores = [
        float(p.strip().lower() == r.strip().lower())
        for p, r in zip(predictions, references, strict=True)
    ]
    by_answer: dict[str, list[float]] = {}
    for r, sc in zip(references, scores, strict=True):
        by_answer.setdefault(r.strip().lower(), []).append(sc)
    n = len(subset)
    result = {
        "schema": SCHEMA_VERSION,
        "step": job.step,
        "dataset": job.dataset,
        "kind": "vqa",
        "partial": job.partial,
        "eval_ratio": job.eval_ratio,
        "n": n,
        "correct": int(sum(scores)),
        "metrics": {
            "loss": mean_loss.value,
            "accuracy": em.value,
            "exact_match": em.value,
            "per_answer_exact_match": {a: sum(v) / len(v) for a, v in sorted(by_answer.items())},
        },
        "stderr": {"accuracy": em.stderr, "exact_match": em.stderr, "loss": mean_loss.stderr},
        "samples": [
            {"id": s.id, "prediction": p, "reference": r}
            for s, p, r in list(zip(subset, predictions, references, strict=True))[:20]
        ],
        **provenance(job, started_at, t0, t_load),
    }
    atomic_write_json(Path(job.out), result)
    logger.info("%s step %d: exact match %.4f on %d samples", job.dataset, job.step, em.value, n)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one orch eval part from its job JSON.")
    parser.add_argument("job", type=Path, help="EvalJob as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    run_eval(EvalJob(**json.loads(args.job.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

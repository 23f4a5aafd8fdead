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

from workers.data.encode import ClassificationEncoder
from workers.data.manifest import Sample, read_manifest
from workers.evaljob import EvalJob
from workers.fsutil import atomic_write_json
from workers.metrics import accuracy, mean_with_stderr, per_class_accuracy
from workers.models.classifier import classification_loss, load_classifier

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
        "checkpoint": job.checkpoint,
        "checkpoint_digest": checkpoint_digest(hf_dir),
        "backend": job.backend,
        "attempt": job.attempt,
        "timings": {
            "load_s": t_load,
            "total_s": time.perf_counter() - t0,
            "started_at": started_at,
            "finished_at": time.time(),
        },
    }
    atomic_write_json(Path(job.out), result)
    logger.info("%s step %d: accuracy %.4f on %d samples", job.dataset, job.step, acc.value, n)
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

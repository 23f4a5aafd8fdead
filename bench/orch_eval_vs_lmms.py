"""orch_eval_vs_lmms: samples/s of an orch VQA eval part over lmms-eval's samples/s, on the same
rows, checkpoint, batch size, image size and generation length, CPU fp32, in the same run.

    PYTHONPATH=. .venv/bin/python bench/orch_eval_vs_lmms.py [--samples 256] [--batch-size 8]
        [--max-new-tokens 16] [--rounds 3] [--threads 1] [--quick] [--demo D] [--model M]

- Rows: the first ``--samples`` rows of the demo's easyvqa/test.jsonl (``orch data demo``, or
  built into a temporary folder when ``--demo`` has none), one question and one image (64x64,
  resized to 56x56: 4 image tokens) each.
- Checkpoint: the tiny Qwen2.5-VL (random weights) with a fresh head, saved as the train loop
  saves one. Its generation_config.json gets ``min_new_tokens = max_new_tokens``: both sides
  load that file and generate greedily, so both generate exactly ``--max-new-tokens`` tokens
  per sample (EOS suppressed until then); the tokens each side generated are printed.
- orch: an EvalPart of kind vqa evaluated in this process by ``workers.evaluate.load_model``
  and ``evaluate_part`` (what ``run_eval`` does), ``metrics=["exact_match"]``. The model is
  loaded once (``orch_load_s``); one untimed pass over one batch warms it; each round times
  ``evaluate_part`` alone (``orch_eval_s``: read rows, encode, generate, metrics, result file;
  no teacher-forced loss, which the vqa kind computes only for a dataset that reports loss).
  ``orch_generate_s`` is the time inside ``model.vlm.generate``, ``orch_loss_forward_s`` inside
  the model's forward pass outside generation (0 here: the loss pass lmms-eval does not do).
- lmms-eval 0.7.3: bench/lmms_side/run_lmms.py under .venv-lmms/bin/python (``make lmms``), a
  local task YAML (``dataset_path: json``) over the same rows, ``simple_evaluate`` with
  bench/lmms_side/qwen2_5_vl_fp32.py (lmms-eval's qwen2_5_vl class, loading fp32). One process
  per round: imports (``lmms_import_s``), model load (``lmms_load_s``), an untimed
  ``simple_evaluate`` over one batch, then the timed one (``lmms_eval_s``: task and dataset
  building, requests, generate_until, metrics). ``lmms_generate_until_s`` is the time inside
  the model class's generate_until and ``lmms_generate_s`` inside ``model.generate``.

Model load and imports are excluded from every samples/s figure and reported apart. Figures are
medians over ``--rounds`` rounds, the two sides alternating which goes first. Every figure is
wall time but ``*_cpu_s`` and ``orch_eval_vs_lmms_cpu``: the process CPU time of the same
evaluation (all its threads), which moves less than wall time when other work shares the CPUs.
The tiny model makes each generate step cheap, so the figures weigh each framework's per-sample
overhead (image decoding, tokenisation, data loading, scoring) far more than a 7B model's would.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LMMS_PY = ROOT / ".venv-lmms" / "bin" / "python"
RUNNER = ROOT / "bench" / "lmms_side" / "run_lmms.py"
IMAGE_SIDE = 56
PIXELS = IMAGE_SIDE * IMAGE_SIDE
DATASET = "easyvqa"
LMMS_TIMEOUT_S = 600  # one lmms-eval process (imports, load, warm-up, the timed pass)

logger = logging.getLogger("bench.orch_eval_vs_lmms")


@dataclass(frozen=True)
class Setup:
    demo: Path
    checkpoint: Path  # the checkpoint's hf/ directory
    digest: str
    manifest: Path  # orch rows (easyvqa's own shape)
    warm_manifest: Path  # the first batch of them
    lmms_rows: Path  # the same rows for the lmms-eval task: id, question, answer, image


def prepare(
    work: Path, demo: Path, model: Path, samples: int, batch: int, new_tokens: int
) -> Setup:
    """Rows, lmms-eval's copy of them, and the checkpoint both sides load."""
    from workers.evaluate import checkpoint_digest
    from workers.models.classifier import build_classifier, save_classifier

    if not (demo / DATASET / "test.jsonl").is_file():
        from workers.data.demo import build_demo

        logger.info("%s has no %s/test.jsonl: building the demo data", demo, DATASET)
        demo = work / "demo"
        build_demo(demo)
    if not (model / "config.json").is_file():
        from workers.models.tiny import build_tiny_qwen2_5_vl

        logger.info("%s has no model: building the tiny Qwen2.5-VL", model)
        model = build_tiny_qwen2_5_vl(work / "tiny")
    lines = (demo / DATASET / "test.jsonl").read_text().splitlines()
    if len(lines) < samples:
        raise SystemExit(f"{demo / DATASET / 'test.jsonl'} has {len(lines)} rows, < {samples}")
    rows = [json.loads(line) for line in lines[:samples]]
    manifest, warm = work / "orch_rows.jsonl", work / "orch_warm.jsonl"
    manifest.write_text("\n".join(lines[:samples]) + "\n")
    warm.write_text("\n".join(lines[:batch]) + "\n")
    lmms_rows = work / "lmms_rows.jsonl"
    lmms_rows.write_text(
        "".join(
            json.dumps(
                {
                    "id": r["id"],
                    "question": r["texts"][-1]["user"],
                    "answer": r["texts"][-1]["assistant"],
                    "image": str((demo / r["images"][0]).resolve()),
                }
            )
            + "\n"
            for r in rows
        )
    )
    hf = work / "ckpt" / "step_000001" / "hf"
    heads = {DATASET: {"kind": "vqa", "num_classes": 0, "labels": None}}
    save_classifier(build_classifier(model, 2, "mean", "sdpa"), hf, model, heads)
    gen_path = hf / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen["min_new_tokens"] = new_tokens  # the same number of new tokens on both sides
    gen_path.write_text(json.dumps(gen, indent=2))
    return Setup(demo, hf, checkpoint_digest(hf), manifest, warm, lmms_rows)


def vqa_part(setup: Setup, manifest: Path, out: Path, batch: int, new_tokens: int) -> Any:
    from orchestrator.contract.evalpart import EvalPart

    return EvalPart(
        step=1,
        dataset=DATASET,
        kind="vqa",
        checkpoint=str(setup.checkpoint),
        dataset_spec={
            "kind": "vqa",
            "train": str(setup.demo / DATASET / "train.jsonl"),
            "eval": str(manifest),
            "image_roots": [str(setup.demo)],
            "max_image_side": IMAGE_SIDE,
            "min_image_side": IMAGE_SIDE,
            "max_new_tokens": new_tokens,
        },
        model_spec={
            "path": str(setup.checkpoint),
            "min_pixels": PIXELS,
            "max_pixels": PIXELS,
            "attn_implementation": "sdpa",
        },
        eval_ratio=1.0,
        partial=False,
        seed=0,
        batch_size=batch,
        out=str(out),
        metrics=["exact_match"],
        checkpoint_digest=setup.digest,
        dtype="float32",
    )


class Timed:
    """Wraps a method of one loaded object (an instance attribute that shadows the class's
    method; nothing in orch is patched) and adds up the time spent inside it."""

    def __init__(self, owner: Any, name: str) -> None:
        self.inner = getattr(owner, name)
        setattr(owner, name, self)
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.seen(kwargs, out)
        return out

    def seen(self, kwargs: dict[str, Any], out: Any) -> None:
        """What a subclass counts from a call."""


class GenerateMeter(Timed):
    """``vlm.generate``: its time, new tokens (generation steps x rows) and prompt tokens
    (unpadded)."""

    def reset(self) -> None:
        super().reset()
        self.samples, self.new_tokens, self.prompt_tokens = 0, 0, 0

    def seen(self, kwargs: dict[str, Any], out: Any) -> None:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        self.samples += ids.shape[0]
        self.new_tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
        self.prompt_tokens += int(mask.sum())


def orch_round(
    part: Any, model: Any, device: Any, meter: GenerateMeter, loss: Timed
) -> dict[str, Any]:
    from workers.evaluate import evaluate_part

    meter.reset()
    loss.reset()
    started_at, t0, c0 = time.time(), time.perf_counter(), time.process_time()
    # t_load 0: the model was loaded once, before the rounds (orch_load_s), so the result's
    # timings.total_s is the evaluation alone.
    result = evaluate_part(part, model, device, started_at, t0, 0.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if result["n"] != meter.samples:
        raise RuntimeError(f"orch evaluated {result['n']} samples, generated for {meter.samples}")
    return {
        "eval_s": float(result["timings"]["total_s"]),
        "wall_s": wall,
        "cpu_s": cpu,
        "generate_s": meter.seconds,
        "loss_forward_s": loss.seconds,
        "samples": int(result["n"]),
        "new_tokens": meter.new_tokens,
        "prompt_tokens": meter.prompt_tokens,
        "exact_match": float(result["metrics"]["exact_match"]),
        "predictions": {s["id"]: str(s["prediction"]).strip() for s in result["samples"]},
    }


def lmms_round(
    lmms_py: Path, setup: Setup, work: Path, args: argparse.Namespace, r: int
) -> dict[str, Any]:
    """One lmms-eval process; its exit status is not trusted: its JSON must exist and count
    every sample."""
    out = work / f"lmms_{r}.json"
    cmd = [
        str(lmms_py), str(RUNNER),
        "--data", str(setup.lmms_rows), "--model", str(setup.checkpoint),
        "--samples", str(args.samples), "--batch-size", str(args.batch_size),
        "--max-new-tokens", str(args.max_new_tokens), "--pixels", str(PIXELS),
        "--threads", str(args.threads), "--work", str(work / f"lmms_work_{r}"), "--out", str(out),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env |= {"HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=work, timeout=LMMS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"lmms-eval side ran past {LMMS_TIMEOUT_S} s: {' '.join(cmd)}") from e
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(
            f"lmms-eval side failed (exit {proc.returncode}, {out} "
            f"{'written' if out.is_file() else 'missing'}):\n{proc.stderr[-4000:]}"
        )
    res: dict[str, Any] = json.loads(out.read_text())
    if res.get("n_effective") != args.samples or res.get("samples") != args.samples:
        raise SystemExit(
            f"lmms-eval side evaluated {res.get('n_effective')} samples "
            f"(generated for {res.get('samples')}), expected {args.samples}: see {out}"
        )
    res["wall_s"] = wall
    return res


def median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rounds)


def agreement(orch: dict[str, str], lmms: dict[str, str]) -> float:
    """Share of the samples orch's result lists (its first 20) where both answers are equal."""
    both = [i for i in orch if i in lmms]
    if not both:
        raise RuntimeError("no sample id in common between the two sides' predictions")
    return sum(orch[i] == lmms[i] for i in both) / len(both)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per side (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    ap.add_argument("--quick", action="store_true", help="16 samples, batch 8, 4 tokens, 1 round")
    ap.add_argument("--demo", type=Path, default=ROOT / "data" / "demo")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-qwen2.5-vl")
    ap.add_argument("--lmms-python", type=Path, default=LMMS_PY, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.samples, args.batch_size, args.max_new_tokens, args.rounds = 16, 8, 4, 1
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    if not args.lmms_python.is_file():
        logger.error(
            "%s is missing: run `make lmms` (lmms-eval 0.7.3 in a venv of its own)",
            args.lmms_python,
        )
        return 2

    import torch
    from transformers.utils import logging as hf_logging

    from workers.evaluate import load_model

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup = prepare(
            work, args.demo, args.model, args.samples, args.batch_size, args.max_new_tokens
        )
        part = vqa_part(
            setup, setup.manifest, work / "orch.json", args.batch_size, args.max_new_tokens
        )
        t0 = time.perf_counter()
        model, device = load_model(part)
        orch_load_s = time.perf_counter() - t0
        meter = GenerateMeter(model.vlm, "generate")
        # A teacher-forced loss pass, were the part to report loss (lmms-eval has none).
        loss = Timed(model, "lm_logits")
        warm = vqa_part(
            setup, setup.warm_manifest, work / "warm.json", args.batch_size, args.max_new_tokens
        )
        orch_round(warm, model, device, meter, loss)  # imports, page cache, first-call costs

        orch, lmms = [], []
        for r in range(args.rounds):
            for side in ("orch", "lmms") if r % 2 == 0 else ("lmms", "orch"):
                if side == "orch":
                    orch.append(orch_round(part, model, device, meter, loss))
                    took = orch[-1]["eval_s"]
                else:
                    lmms.append(lmms_round(args.lmms_python, setup, work, args, r))
                    took = lmms[-1]["evaluate_s"]
                logger.info("round %d, %s: %d samples in %.3f s", r + 1, side, args.samples, took)
        agree = agreement(orch[-1]["predictions"], lmms[-1]["predictions"])

    n = args.samples
    orch_eval, lmms_eval = median(orch, "eval_s"), median(lmms, "evaluate_s")
    orch_gen, lmms_gen = median(orch, "generate_s"), median(lmms, "generate_s")
    lmms_until = median(lmms, "generate_until_s")
    orch_cpu, lmms_cpu = median(orch, "cpu_s"), median(lmms, "evaluate_cpu_s")
    figures: list[tuple[str, Any]] = [
        ("samples", n),
        ("batch_size", args.batch_size),
        ("max_new_tokens", args.max_new_tokens),
        ("image_side", IMAGE_SIDE),
        ("torch_threads", args.threads),
        ("rounds", args.rounds),
        ("cpus", os.cpu_count()),
        ("load_avg_1m_start", f"{load_start:.2f}"),
        ("orch_samples", orch[-1]["samples"]),
        ("orch_new_tokens_per_sample", f"{orch[-1]['new_tokens'] / n:.2f}"),
        ("orch_prompt_tokens_per_sample", f"{orch[-1]['prompt_tokens'] / n:.2f}"),
        ("orch_load_s", f"{orch_load_s:.3f}"),
        ("orch_eval_s", f"{orch_eval:.3f}"),
        ("orch_eval_cpu_s", f"{orch_cpu:.3f}"),
        ("orch_generate_s", f"{orch_gen:.3f}"),
        ("orch_loss_forward_s", f"{median(orch, 'loss_forward_s'):.3f}"),
        ("orch_exact_match", f"{orch[-1]['exact_match']:.4f}"),
        ("lmms_samples", lmms[-1]["n_effective"]),
        ("lmms_new_tokens_per_sample", f"{lmms[-1]['new_tokens'] / n:.2f}"),
        ("lmms_prompt_tokens_per_sample", f"{lmms[-1]['prompt_tokens'] / n:.2f}"),
        ("lmms_import_s", f"{median(lmms, 'import_s'):.3f}"),
        ("lmms_load_s", f"{median(lmms, 'load_s'):.3f}"),
        ("lmms_process_wall_s", f"{median(lmms, 'wall_s'):.3f}"),
        ("lmms_eval_s", f"{lmms_eval:.3f}"),
        ("lmms_eval_cpu_s", f"{lmms_cpu:.3f}"),
        ("lmms_generate_until_s", f"{lmms_until:.3f}"),
        ("lmms_generate_s", f"{lmms_gen:.3f}"),
        ("lmms_exact_match", f"{lmms[-1]['exact_match']:.4f}"),
        ("prediction_agreement", f"{agree:.3f}"),
        ("orch_eval_samples_per_s", f"{n / orch_eval:.2f}"),
        ("lmms_eval_samples_per_s", f"{n / lmms_eval:.2f}"),
        ("orch_eval_vs_lmms", f"{lmms_eval / orch_eval:.3f}"),
        ("orch_eval_vs_lmms_cpu", f"{lmms_cpu / orch_cpu:.3f}"),
        ("lmms_generate_until_samples_per_s", f"{n / lmms_until:.2f}"),
        ("orch_eval_vs_lmms_generate_until", f"{lmms_until / orch_eval:.3f}"),
        ("orch_generate_samples_per_s", f"{n / orch_gen:.2f}"),
        ("lmms_generate_samples_per_s", f"{n / lmms_gen:.2f}"),
        ("orch_generate_vs_lmms", f"{lmms_gen / orch_gen:.3f}"),
        ("load_avg_1m_end", f"{os.getloadavg()[0]:.2f}"),
    ]
    sys.stdout.write("".join(f"{name}={value}\n" for name, value in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

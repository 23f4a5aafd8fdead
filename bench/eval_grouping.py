"""eval_load_s_grouped against eval_load_s_per_part: model-load time per checkpoint when its
eval parts share one load (evaluation.group_parts, workers.evaluate.run_evals) and when each part
loads the model itself (workers.evaluate.run_eval per part), measured in the same process on the
same checkpoint, alternating the two, and the evaluation time beside it.

    PYTHONPATH=. .venv/bin/python bench/eval_grouping.py [--parts 3] [--rounds 3] [--quick]

Needs `make run` artefacts (data/demo, models/tiny-qwen2.5-vl), or ``--demo``/``--model``. The
checkpoint is the tiny model with a fresh head, saved as the train loop saves one. The load of a
7B model takes tens of seconds per part; the tiny model shows the shape of the saving, not its
size.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parts_for(checkpoint: Path, demo: Path, out: Path, n: int) -> list:  # type: ignore[type-arg]
    from orchestrator.contract.evalpart import EvalPart

    names = ["digits", "faces", "textures"]
    parts = []
    for i in range(n):
        name = names[i % len(names)]
        classes = {"digits": 10, "faces": 2, "textures": 10}[name]
        parts.append(
            EvalPart(
                step=1,
                dataset=name,
                kind="classification",
                checkpoint=str(checkpoint),
                dataset_spec={
                    "kind": "classification",
                    "train": str(demo / name / "train.jsonl"),
                    "eval": str(demo / name / "test.jsonl"),
                    "num_classes": classes,
                },
                model_spec={
                    "path": str(checkpoint),
                    "min_pixels": 3136,
                    "max_pixels": 3136,
                    "attn_implementation": "sdpa",
                },
                eval_ratio=0.25,
                partial=True,
                seed=0,
                batch_size=64,
                out=str(out / f"{name}_{i}.json"),
                metrics=["accuracy", "loss"],
            )
        )
    return parts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=3, help="eval parts of the checkpoint")
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurements per side")
    ap.add_argument("--quick", action="store_true", help="2 parts, 1 round")
    ap.add_argument("--demo", type=Path, default=ROOT / "data" / "demo")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-qwen2.5-vl")
    args = ap.parse_args()
    n_parts, rounds = (2, 1) if args.quick else (args.parts, args.rounds)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from workers.evaluate import run_eval, run_evals
    from workers.models.classifier import build_classifier, save_classifier

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = args.demo
        if not (demo / "digits" / "test.jsonl").is_file():
            from workers.data.demo import build_demo

            demo = work / "demo"
            build_demo(demo)
        model = args.model
        if not (model / "config.json").is_file():
            from workers.models.tiny import build_tiny_qwen2_5_vl

            model = build_tiny_qwen2_5_vl(work / "tiny")
        hf = work / "ckpt" / "hf"
        heads = {n: {"num_classes": c, "labels": None} for n, c in (("digits", 10), ("faces", 2))}
        save_classifier(build_classifier(model, 10, "mean", "sdpa"), hf, model, heads)
        run_eval(parts_for(hf, demo, work / "warm", 1)[0])  # imports and page cache, not timed

        grouped_load, per_part_load, grouped_total, per_part_total = [], [], [], []
        for r in range(rounds):
            parts = parts_for(hf, demo, work / f"g{r}", n_parts)
            t0 = time.perf_counter()
            results = run_evals(parts)
            grouped_total.append(time.perf_counter() - t0)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
            grouped_load.append(sum(float(res["timings"]["load_s"]) for res in results))  # type: ignore[index]
            parts = parts_for(hf, demo, work / f"p{r}", n_parts)
            t0 = time.perf_counter()
            singles = [run_eval(p) for p in parts]
            per_part_total.append(time.perf_counter() - t0)
            per_part_load.append(sum(float(s["timings"]["load_s"]) for s in singles))

    g, p = statistics.median(grouped_load), statistics.median(per_part_load)
    print(f"eval_parts_per_checkpoint={n_parts}")
    print(f"eval_rounds={rounds}")
    print(f"eval_load_s_grouped={g:.3f}")
    print(f"eval_load_s_per_part={p:.3f}")
    print(f"eval_load_grouped_vs_per_part={g / p:.3f}")
    print(f"eval_total_s_grouped={statistics.median(grouped_total):.3f}")
    print(f"eval_total_s_per_part={statistics.median(per_part_total):.3f}")
    ratio = statistics.median(grouped_total) / statistics.median(per_part_total)
    print(f"eval_total_grouped_vs_per_part={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

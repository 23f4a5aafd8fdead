"""The lmms-eval side of bench/orch_eval_vs_lmms.py: runs under .venv-lmms/bin/python (lmms-eval
0.7.3, no orch import), evaluates the local easy-VQA task through ``simple_evaluate`` with the
fp32 copy of lmms-eval's qwen2_5_vl class (qwen2_5_vl_fp32.py), and writes its timings and
results as JSON to ``--out``.

    .venv-lmms/bin/python bench/lmms_side/run_lmms.py --data ROWS.jsonl --model HF_DIR \
        --samples 256 --batch-size 8 --max-new-tokens 16 --work TMP --out lmms.json

One untimed warm-up pass over ``--batch-size`` samples comes first (as the orch side has), then
the timed pass over all of them. Offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE /
TRANSFORMERS_OFFLINE are set here, and HF_HOME points into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()
HERE = Path(__file__).resolve().parent
TASK = "orch_easyvqa"
# Written into a temporary folder, next to no hooks file: lmms-eval then imports
# easyvqa_hooks by name, from this folder (on sys.path).
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function easyvqa_hooks.doc_to_visual
doc_to_text: !function easyvqa_hooks.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
metadata:
  - version: 0.0
"""

logger = logging.getLogger("bench.lmms_side")


def offline_env(work: Path) -> None:
    """No download at run time, and an HF cache of this run's own."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ["HF_HOME"] = str(work / "hf_home")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def block_torchvision() -> None:
    """This venv's torchvision (PyPI's CUDA build) fails to import beside torch 2.13.0+cpu and
    nothing here needs it: a None entry makes ``import torchvision`` an ImportError and makes
    transformers' availability check (importlib.util.find_spec) report it missing."""
    sys.modules["torchvision"] = None  # type: ignore[assignment]


def task_scores(results: dict[str, Any], samples: int) -> dict[str, Any]:
    """The task's score and sample counts, checked: lmms-eval's own success is not trusted."""
    scores = (results.get("results") or {}).get(TASK)
    if not scores or "exact_match,none" not in scores:
        raise RuntimeError(
            f"lmms-eval returned no exact_match for {TASK}: {results.get('results')}"
        )
    effective = int(results["n-samples"][TASK]["effective"])
    logged = results.get("samples", {}).get(TASK, [])
    if effective != samples or len(logged) != samples:
        raise RuntimeError(
            f"lmms-eval evaluated {effective} samples ({len(logged)} logged), expected {samples}"
        )
    return {
        "exact_match": float(scores["exact_match,none"]),
        "n_effective": effective,
        "n_logged": len(logged),
        "predictions": {
            str(s["doc"]["id"]): str(s["filtered_resps"][0]).strip()
            for s in sorted(logged, key=lambda s: int(s["doc_id"]))
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="rows: id, question, answer, image")
    ap.add_argument("--model", type=Path, required=True, help="the checkpoint's HF directory")
    ap.add_argument("--samples", type=int, required=True, help="rows in --data")
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--pixels", type=int, default=3136, help="min_pixels = max_pixels")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (task, HF_HOME)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    offline_env(args.work)
    block_torchvision()
    sys.path.insert(0, str(HERE))

    t0 = time.perf_counter()
    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from qwen2_5_vl_fp32 import Qwen2_5_VLFp32

    torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - t0

    task_dir = args.work / "lmms_task"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / f"{TASK}.yaml").write_text(
        TASK_YAML.format(
            task=TASK, data=json.dumps(str(args.data)), max_new_tokens=args.max_new_tokens
        )
    )

    t0 = time.perf_counter()
    lm = Qwen2_5_VLFp32(
        pretrained=str(args.model),
        device="cpu",
        device_map="cpu",
        batch_size=args.batch_size,
        min_pixels=args.pixels,
        max_pixels=args.pixels,
        system_prompt="",  # orch's VQA prompt has no system turn: the same tokens on both sides
    )
    load_s = time.perf_counter() - t0
    model = lm.model

    def evaluate(limit: int | None) -> tuple[dict[str, Any], float, float]:
        lm.stats = lm.empty_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        manager = TaskManager("WARNING", include_path=str(task_dir), include_defaults=False)
        results = simple_evaluate(
            model=lm, tasks=[TASK], task_manager=manager, limit=limit, verbosity="WARNING"
        )
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        # evaluate() ends with lm.clean(), which deletes the model's attributes (to free GPU
        # memory for a judge model): put it back for the next pass.
        lm._model = model
        return results, elapsed, cpu

    _, warmup_s, _ = evaluate(args.batch_size)  # imports, page cache, the datasets cache
    results, evaluate_s, evaluate_cpu_s = evaluate(None)
    if results is None:
        raise RuntimeError("simple_evaluate returned no results (not rank 0?)")
    stats = dict(lm.stats)
    out = {
        "import_s": import_s,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "evaluate_s": evaluate_s,
        "evaluate_cpu_s": evaluate_cpu_s,  # all of this process's threads
        **stats,
        **task_scores(results, args.samples),
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "process_s": time.perf_counter() - T_START,
    }
    args.out.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

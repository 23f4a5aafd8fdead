"""orch_part_s against lmms_cli_s: the wall time of one lmms-eval task as an orch eval part
(``python -m workers.evaluate PART.json``, what the local backend runs and every backend's
worker does: orch's process, then lmms-eval's in .venv-lmms, then the checks and the result in
orch's shape) and of the `lmms-eval` command line alone on the same task, checkpoint, documents
and batch size (orch's model class through LMMS_EVAL_PLUGINS). Alternating, median of
``--rounds``. Beside it, two tasks of one checkpoint as one grouped part (one lmms-eval
process, one model load) against two command lines.

    PYTHONPATH=. .venv/bin/python bench/lmms_part_overhead.py [--rounds 3] [--limit 8] [--quick]

Needs .venv-lmms (`make lmms`) and `make run`'s artefacts (data/demo, models/tiny-qwen2.5-vl),
or ``--demo``/``--model``. The tasks are tests/lmms_tasks' orch_vqa and orch_mcq.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.lmms import (  # noqa: E402  (the test tasks and the CLI as the tests run it)
    LMMS_PYTHON,
    lmms_cli,
    lmms_cli_env,
    make_lmms_tasks,
)

GROUP = """
import json, sys
from orchestrator.contract.evalpart import EvalPart
from workers.evaluate import run_evals
parts = [EvalPart.from_json(json.loads(open(p).read())) for p in sys.argv[1:]]
for r in run_evals(parts):
    if isinstance(r, BaseException):
        raise r
"""


def part(task: str, checkpoint: Path, tasks: Path, out: Path, limit: int) -> dict[str, Any]:
    from orchestrator.contract.evalpart import EvalPart

    return EvalPart(
        step=1,
        dataset=f"lmms.{task}",
        kind="lmms",
        checkpoint=str(checkpoint),
        dataset_spec={
            "task": task,
            "include_path": [str(tasks)],
            "limit": limit,
            "final_limit": None,
            "model": "orch",
            "model_args": {},
            "batch_size": 4,
            "python": str(LMMS_PYTHON),
            "timeout_min": 20,
        },
        model_spec={},
        eval_ratio=1.0,
        partial=True,
        seed=0,
        batch_size=4,
        out=str(out),
        metrics=[],
        checkpoint_digest="bench",
    ).to_json()


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=8, help="documents per task (8: all)")
    ap.add_argument(
        "--quick", action="store_true", help="1 round, 4 documents, no grouped comparison"
    )
    ap.add_argument("--demo", type=Path, default=ROOT / "data" / "demo")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-qwen2.5-vl")
    args = ap.parse_args()
    rounds, limit = (1, 4) if args.quick else (args.rounds, args.limit)
    logging.basicConfig(level=logging.WARNING)
    if not LMMS_PYTHON.is_file():
        raise SystemExit(f"no {LMMS_PYTHON}: `make lmms` builds it")

    from tests.helpers.paths import repo_env
    from workers.models.classifier import build_classifier, save_classifier

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tasks = make_lmms_tasks(args.demo, work / "lmms", n=limit)
        hf = work / "ckpt" / "hf"
        save_classifier(build_classifier(args.model, 10, "mean", "sdpa"), hf, args.model,
                        {"faces": {"num_classes": 2, "labels": None}})  # fmt: skip
        env = repo_env(HF_HOME=str(work / "hf_home"), OMP_NUM_THREADS="2")
        cli_env = lmms_cli_env(work / "hf_home") | {"OMP_NUM_THREADS": "2"}
        orch_py = sys.executable
        cli_s: list[float] = []
        cli_mcq_s: list[float] = []
        part_s: list[float] = []
        group_s: list[float] = []
        inner: dict[str, Any] = {}
        for r in range(rounds):
            out = work / f"r{r}"
            out.mkdir()

            def cli(task: str, folder: Path) -> list[str]:
                return [*lmms_cli(hf, task, tasks, folder, batch_size=4), "--limit", str(limit)]

            cli_s.append(timed(cli("orch_vqa", out / "cli"), cli_env))
            spec = out / "vqa.part.json"
            spec.write_text(json.dumps(part("orch_vqa", hf, tasks, out / "lmms.orch_vqa.json",
                                            limit)))  # fmt: skip
            part_s.append(timed([orch_py, "-m", "workers.evaluate", str(spec)], env))
            inner = json.loads((out / "lmms.orch_vqa.json").read_text())["lmms"]
            if args.quick:  # the part against the command line only
                continue
            files = []
            for task in ("orch_vqa", "orch_mcq"):
                f = out / f"g_{task}.part.json"
                f.write_text(json.dumps(part(task, hf, tasks, out / f"g/lmms.{task}.json", limit)))
                files.append(str(f))
            group_s.append(timed([orch_py, "-c", GROUP, *files], env))
            cli_mcq_s.append(timed(cli("orch_mcq", out / "cli_mcq"), cli_env))

    cli_vqa = statistics.median(cli_s)
    orch_part = statistics.median(part_s)
    print(f"lmms_rounds={rounds}")
    print(f"lmms_documents={limit}")
    print(f"lmms_cli_s={cli_vqa:.2f}")
    print(f"orch_part_s={orch_part:.2f}")
    print(f"orch_part_vs_cli={orch_part / cli_vqa:.3f}")
    print(f"orch_part_overhead_s={orch_part - cli_vqa:.2f}")
    print(f"lmms_import_s={inner['import_s']:.2f}")
    print(f"lmms_load_s={inner['load_s']:.2f}")
    print(f"lmms_evaluate_s={inner['evaluate_s']:.2f}")
    if group_s:
        cli_both = statistics.median(a + b for a, b in zip(cli_s, cli_mcq_s, strict=True))
        grouped = statistics.median(group_s)
        print(f"lmms_cli_two_tasks_s={cli_both:.2f}")
        print(f"orch_grouped_two_tasks_s={grouped:.2f}")
        print(f"orch_grouped_vs_two_cli={grouped / cli_both:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

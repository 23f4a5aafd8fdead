"""One lmms-eval task on one checkpoint, in the lmms-eval environment (``.venv-lmms``):

    .venv-lmms/bin/python -m workers.lmms.entry REQUEST.json

    .venv-lmms/bin/python -m workers.lmms.entry --check '["task"]' '["include/path"]'

REQUEST holds the checkpoint, include_path, model, model_args, batch_size, device, dtype and
the tasks, each with its limit and output folder. The model is loaded once; each task runs
through lmms-eval's Python API (``simple_evaluate``) with its own task registry, and what it
returns is written as ``OUT/results.json`` and ``OUT/samples.jsonl`` (one line per document,
keyed by ``doc_id``), or its exception as ``OUT/error.txt``.
Nothing here decides whether the task succeeded: the orch side (``workers.lmms.part``) checks the
files. Offline: no hub, no dataset download; the HF cache is the part's own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("orch.lmms.entry")


def offline(hf_home: Path) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ["HF_HOME"] = str(hf_home)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_manager(include_path: list[str], tasks: list[str]) -> Any:
    """lmms-eval's task registry: the include_path folders alone when they hold the tasks
    (indexing lmms-eval's ~340 built-in folders costs seconds), else with the built-in tasks."""
    from lmms_eval.tasks import TaskManager

    if include_path:
        manager = TaskManager("WARNING", include_path=include_path, include_defaults=False)
        if all(t in manager.all_tasks for t in tasks):
            return manager
    manager = TaskManager("WARNING", include_path=include_path or None, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise SystemExit(
            f"lmms-eval knows no task {unknown} (include_path {include_path or 'none'}); "
            "check evaluation.lmms.tasks and include_path"
        )
    return manager


def model_of(req: dict[str, Any]) -> Any:
    """orch's model object, or the name and argument string of an lmms-eval model class."""
    if req["model"] == "orch":
        from workers.lmms.models.orch import OrchLmms

        return OrchLmms(
            pretrained=req["checkpoint"],
            device=req["device"],
            dtype=req["dtype"],
            batch_size=req["batch_size"],
            **req["model_args"],
        ), ""
    args = {"pretrained": req["checkpoint"], **req["model_args"]}
    return req["model"], ",".join(f"{k}={v}" for k, v in args.items())


def jsonable(value: Any) -> Any:
    """numpy scalars and other strays as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def check(tasks: list[str], include_path: list[str]) -> int:
    """``--check TASKS INCLUDE_PATH``: can this environment run these tasks? One JSON line:
    lmms-eval's version, and the tasks it does not know (`orch doctor` reads it)."""
    import importlib.metadata

    offline(Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"))
    from lmms_eval.tasks import TaskManager

    import workers.lmms.models.orch  # noqa: F401  (orch's model class imports here)

    known: set[str] = set()
    if include_path:
        known = set(
            TaskManager("WARNING", include_path=include_path, include_defaults=False).all_tasks
        )
    missing = [t for t in tasks if t not in known]
    if missing:
        manager = TaskManager("WARNING", include_path=include_path or None, include_defaults=True)
        missing = [t for t in missing if t not in manager.all_tasks]
    version = importlib.metadata.version("lmms_eval")
    sys.stdout.write(json.dumps({"lmms_eval": version, "unknown_tasks": missing}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--check":
        return check(json.loads(args[1]), json.loads(args[2]))
    req = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    offline(Path(req["hf_home"]))
    t0 = time.perf_counter()
    import torch

    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    from lmms_eval.evaluator import simple_evaluate

    import_s = time.perf_counter() - t0
    manager = task_manager(req["include_path"], [t["task"] for t in req["tasks"]])
    t1 = time.perf_counter()
    model, model_args = model_of(req)
    load_s = time.perf_counter() - t1
    for i, item in enumerate(req["tasks"]):
        out = Path(item["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        t2 = time.perf_counter()
        try:
            results = simple_evaluate(
                model=model,
                model_args=model_args or None,
                tasks=[item["task"]],
                task_manager=manager,
                limit=item["limit"],
                batch_size=req["batch_size"],
                device=req["device"],
                log_samples=True,
                verbosity="WARNING",
            )
        # One task's crash is its own part's failure (written for orch to read); the next
        # task of the checkpoint still runs on the loaded model.
        except Exception as e:
            logger.exception("task %s failed", item["task"])
            message = " ".join(str(e).split())  # one line: it becomes the part's reason
            (out / "error.txt").write_text(f"{type(e).__name__}: {message}\n")
            continue
        if results is None:
            (out / "error.txt").write_text("simple_evaluate returned nothing (not rank 0)\n")
            continue
        timing = {"import_s": import_s if i == 0 else 0.0, "load_s": load_s if i == 0 else 0.0,
                  "evaluate_s": time.perf_counter() - t2}  # fmt: skip
        write_results(out, results, timing)
        logger.info("%s: results written to %s", item["task"], out)
    return 0


def write_results(out: Path, results: dict[str, Any], timing: dict[str, float]) -> None:
    import importlib.metadata

    samples = results.pop("samples", {}) or {}
    with (out / "samples.jsonl.tmp").open("w") as f:
        for task, rows in samples.items():
            for row in sorted(rows, key=lambda r: int(r["doc_id"])):
                f.write(json.dumps({"task": task, **row}, default=jsonable) + "\n")
    (out / "samples.jsonl.tmp").replace(out / "samples.jsonl")
    results["orch"] = {
        **timing,
        "lmms_eval_version": importlib.metadata.version("lmms_eval"),
        "samples_per_task": {t: len(r) for t, r in samples.items()},
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=jsonable))
    tmp.replace(out / "results.json")


if __name__ == "__main__":
    sys.exit(main())

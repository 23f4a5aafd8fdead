"""An lmms-eval task's eval part, on the orch side: run the task on the part's checkpoint in the
lmms-eval environment, check the files it wrote, write the part's result in orch's shape.

lmms-eval's own success is never trusted (its command line exits 0 when a task crashes): a part
succeeds only when ``results.json`` is there, holds the task with numeric metrics, and every
evaluated document has its logged sample. Anything else raises with the reason (the lmms-eval
error line when there is one), which the backend records as the part's failure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import workers
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.lmms import tasks_of
from orchestrator.contract.records import LMMS_KIND, SCHEMA_VERSION

logger = logging.getLogger("orch.lmms")

ORCH_ROOT = Path(workers.__file__).resolve().parent.parent
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_.]*(Error|Exception|Exit)\b.*)$")


class LmmsPartError(RuntimeError):
    """The task did not produce complete results; the message says why."""


def samples_path(out: Path) -> Path:
    """Where a part's per-sample outputs go: beside its result, ``<part>.samples.jsonl``."""
    return out.with_name(out.stem + ".samples.jsonl")


def lmms_python(section: dict[str, Any]) -> Path:
    python = Path(section["python"])
    if not python.is_absolute():
        python = Path.cwd() / python
    if not os.access(python, os.X_OK):
        raise LmmsPartError(
            f"evaluation.lmms.python: {python} is not an executable Python; build the lmms-eval "
            "environment with `make lmms` (or point python at one that has lmms-eval and orch)"
        )
    return python


def run_lmms_part(part: EvalPart) -> dict[str, Any]:
    """Evaluate one lmms-eval task on the part's checkpoint; write and return its result."""
    (result,) = run_lmms_parts([part])
    if isinstance(result, BaseException):
        raise result
    return result


def run_lmms_parts(parts: list[EvalPart]) -> list[dict[str, Any] | BaseException]:
    """Several lmms-eval tasks of one checkpoint in one lmms-eval process (one import, one model
    load with orch's model class); each task is evaluated on its own, so one that crashes costs
    only its own part. Each part writes its own result; a failed one's error takes its place."""
    from workers.evaluate import dtype_for, eval_device

    first = parts[0]
    shared = ("checkpoint", "gpus", "dtype", "batch_size")
    section_keys = ("python", "model", "model_args", "include_path")
    for p in parts[1:]:
        if any(getattr(p, k) != getattr(first, k) for k in shared) or any(
            p.dataset_spec[k] != first.dataset_spec[k] for k in section_keys
        ):
            raise ValueError(f"lmms-eval parts {first.dataset} and {p.dataset} cannot share a run")
    started_at, t0 = time.time(), time.perf_counter()
    section = first.dataset_spec
    device = eval_device(first)
    dtype = str(dtype_for(device, first.dtype)).removeprefix("torch.")
    python = lmms_python(section)
    names = ",".join(str(p.dataset_spec["task"]) for p in parts)
    results: list[dict[str, Any] | BaseException] = []
    with tempfile.TemporaryDirectory(prefix="orch-lmms-") as work:
        req = {
            "checkpoint": first.checkpoint,
            "include_path": [str(p) for p in section["include_path"]],
            "model": section["model"],
            "model_args": section["model_args"],
            "batch_size": first.batch_size,
            "device": device.type,
            "dtype": dtype,
            "hf_home": os.environ.get("HF_HOME") or str(Path(work) / "hf_home"),
            "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
            "tasks": [
                {
                    "task": p.dataset_spec["task"],
                    "limit": p.dataset_spec["limit"],
                    "out_dir": str(Path(work) / f"out{i}"),
                }
                for i, p in enumerate(parts)
            ],
        }
        request = Path(work) / "request.json"
        request.write_text(json.dumps(req))
        timeout_s = sum(float(p.dataset_spec["timeout_min"]) * 60 for p in parts)
        wall, output = run_entry(python, request, names, timeout_s)
        for i, (part, item) in enumerate(zip(parts, req["tasks"], strict=True)):
            try:
                raw = read_results(Path(item["out_dir"]), item["task"], item["limit"], output)
                results.append(
                    _write_part(part, raw, Path(item["out_dir"]), wall, device.type, dtype,
                                (started_at, t0) if i == 0 else (time.time(), time.perf_counter()))
                )  # fmt: skip
            except LmmsPartError as e:
                logger.error("%s step %d failed: %s", part.dataset, part.step, e)
                results.append(e)
    return results


def _write_part(
    part: EvalPart,
    raw: dict[str, Any],
    out_dir: Path,
    wall: float,
    device: str,
    dtype: str,
    started: tuple[float, float],
) -> dict[str, Any]:
    """The part's result (and its samples beside it) from what lmms-eval returned."""
    from workers.evaluate import provenance

    section = part.dataset_spec
    task = str(section["task"])
    out = Path(part.out)
    samples = samples_path(out)
    samples.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / "samples.jsonl", samples.with_suffix(".tmp"))
    samples.with_suffix(".tmp").replace(samples)
    tasks = tasks_of(raw)
    main = tasks.get(task) or {}
    n = main.get("n") or sum(int(b["n"] or 0) for b in tasks.values())
    timing = raw.get("orch", {})
    result = {
        "schema": SCHEMA_VERSION,
        "step": part.step,
        "dataset": part.dataset,
        "kind": LMMS_KIND,
        "task": task,
        "partial": part.partial,
        "eval_ratio": 1.0,
        "limit": section["limit"],
        "n": int(n),
        "metrics": dict(main.get("metrics") or {}),
        "stderr": dict(main.get("stderr") or {}),
        "tasks": tasks,
        "samples_file": samples.name,
        "lmms": {
            "model": section["model"],
            "model_args": section["model_args"],
            "lmms_eval_version": timing.get("lmms_eval_version"),
            "import_s": timing.get("import_s"),
            "load_s": timing.get("load_s"),
            "evaluate_s": timing.get("evaluate_s"),
            "process_s": wall,  # of the lmms-eval process (shared by a group's parts)
        },
        **provenance(part, *started, float(timing.get("load_s") or 0.0)),
        "device": {"type": device, "dtype": dtype},
    }
    atomic_write_json(out, result)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    logger.info("%s step %d: %s on %d samples", part.dataset, part.step, shown, n)
    return result


def lmms_env() -> dict[str, str]:
    """The environment of a process in the lmms-eval Python: this checkout of orch first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ORCH_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("VIRTUAL_ENV", None)
    return env


def check_environment(python: Path, tasks: list[str], include_path: list[str]) -> dict[str, Any]:
    """Whether ``python`` can run these tasks: {"lmms_eval": version, "unknown_tasks": [...]};
    raises LmmsPartError with the reason when it cannot import lmms-eval or orch's model."""
    cmd = [str(python), "-m", "workers.lmms.entry", "--check", json.dumps(tasks),
           json.dumps(include_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=lmms_env(), timeout=300)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise LmmsPartError(
            f"{python} cannot run lmms-eval with orch's model: "
            f"{error_line((proc.stderr or proc.stdout).splitlines())}"
        )
    value: dict[str, Any] = json.loads(lines[-1])
    return value


def run_entry(python: Path, request: Path, task: str, timeout_s: float) -> tuple[float, list[str]]:
    """Run workers.lmms.entry in the lmms-eval environment, its output into this part's log.
    Returns the wall time and the last lines of output; raises with the error line when the
    process fails."""
    env = lmms_env()
    cmd = [str(python), "-m", "workers.lmms.entry", str(request)]
    logger.info("lmms-eval %s: %s", task, " ".join(cmd))
    t0 = time.perf_counter()
    last: deque[str] = deque(maxlen=60)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_child_of_this_process,
    )
    assert proc.stdout is not None
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A cancelled part (SIGTERM: the local backend, SLURM's scancel) takes lmms-eval with it.
        def on_term(signum: int, _frame: Any) -> None:
            _kill_group(proc)
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, on_term)
    reader = threading.Thread(target=_relay, args=(proc.stdout, last), daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            _kill_group(proc)
    reader.join(timeout=10)
    if code is None:
        raise LmmsPartError(
            f"lmms-eval {task}: killed after {timeout_s / 60:g} min (evaluation.lmms.timeout_min)"
        )
    wall = time.perf_counter() - t0
    if code != 0:
        raise LmmsPartError(f"lmms-eval {task} exited {code}: {error_line(last)}")
    # Exit 0 says nothing (a crashed task exits 0 too): the results are checked next.
    return wall, list(last)


def _relay(stream: Any, last: deque[str]) -> None:
    """lmms-eval's output, line by line, into this part's log (and the last lines kept)."""
    for line in stream:
        line = line.rstrip("\n")
        last.append(line)
        logger.info("lmms-eval: %s", line)


def _child_of_this_process() -> None:
    """In the lmms-eval process before it starts: a process group of its own (killed as a
    whole), and SIGKILL when this process dies, however it dies (a Ray worker killed on
    cancel, a SIGKILLed part): no lmms-eval outlives its part."""
    os.setsid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def error_line(lines: Any) -> str:
    """The last error line of lmms-eval's output (``ValueError: ...``), or its last line."""
    lines = [str(x) for x in lines]
    for line in reversed(lines):
        m = _ERROR_LINE.match(line)
        if m:
            return m.group(1).strip()
    return lines[-1].strip() if lines else "no output"


def read_results(out_dir: Path, task: str, limit: int | None, output: list[str]) -> dict[str, Any]:
    """The results lmms-eval wrote, checked complete for ``task``."""
    path = out_dir / "results.json"
    error = out_dir / "error.txt"  # the task's exception, as the entry caught it
    if error.is_file():
        raise LmmsPartError(f"lmms-eval {task} failed: {error.read_text().strip()}")
    if not path.is_file():
        raise LmmsPartError(f"lmms-eval {task} wrote no results: {error_line(output)}")
    raw = json.loads(path.read_text())
    results = raw.get("results") or {}
    if task not in results and task not in (raw.get("groups") or {}):
        raise LmmsPartError(
            f"lmms-eval returned no result for task {task} (the task crashed?): "
            f"{error_line(output)}"
        )
    logged = raw.get("orch", {}).get("samples_per_task", {})
    for name, counts in (raw.get("n-samples") or {}).items():
        effective = int(counts.get("effective", 0))
        if effective == 0:
            raise LmmsPartError(f"lmms-eval evaluated no document of {name}")
        if logged.get(name) != effective:
            raise LmmsPartError(
                f"lmms-eval {name}: {effective} documents evaluated but "
                f"{logged.get(name, 0)} samples logged; the results are incomplete"
            )
        expected = min(limit, int(counts["original"])) if limit else int(counts["original"])
        if effective != expected:
            raise LmmsPartError(
                f"lmms-eval {name}: {effective} documents evaluated, expected {expected}"
            )
    return raw

"""Shared fixtures: the real demo data and a tiny real Qwen2.5-VL, built once per session; the
markers that split the suite (``make test-fast`` runs what is not slow, e2e or slurm).

Helpers that test modules share (job builders, fakes, run-directory fabricators, subprocess
helpers) live in ``tests/helpers``; test modules import them from there, never from each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import demo_job
from tests.helpers.runs import DemoRun, MeasuredPlan

# Tests never reach a hub or a wandb server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Modules whose every test needs the real local SLURM (cluster/local/slurm.sh).
SLURM_MODULES = {"test_slurm.py"}


# The longest modules, with their seconds in `make test` on a 2-core machine (2026-12-03, a
# session fixture counted where it is first asked for). They are handed to the xdist workers
# first, longest first, and the short modules fill in at the end (make test passes
# --no-loadscope-reorder: xdist's own order, modules with most tests first, put these last and
# the suite ended with one worker on a long module and the other with nothing left to do).
LONGEST_MODULES = {
    "test_bench.py": 210, "test_node_loss.py": 165, "test_slurm.py": 150, "test_e2e.py": 135,
    "test_lmms_parts.py": 120, "test_ray_nodes.py": 90, "test_families.py": 85,
    "test_demo_bench.py": 60, "test_async_checkpoint.py": 45, "test_bench_orch_vs_lmms.py": 45,
    "test_plan.py": 45, "test_extra_kind.py": 40, "test_train_ranks.py": 35,
    "test_backends.py": 20, "test_disk.py": 15, "test_bench_scale.py": 15,
    "test_lmms_metrics.py": 10, "test_index.py": 10,
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_slurm's tests are ``slurm``; ``e2e`` and ``slurm`` tests are ``slow`` too. Other slow
    tests (a Ray Train or DeepSpeed run, or more than ~5 s on 2 cores) carry ``slow`` themselves.
    The longest modules come first (LONGEST_MODULES), each keeping its tests' order."""
    for item in items:
        if item.path.name in SLURM_MODULES:
            item.add_marker(pytest.mark.slurm)
        if any(item.get_closest_marker(name) is not None for name in ("e2e", "slurm")):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: -LONGEST_MODULES.get(item.path.name, 0))  # stable


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.models.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """An untrained classifier checkpoint's hf/ directory, as the train loop writes it."""
    from workers.models.classifier import build_classifier, save_classifier

    hf = tmp_path_factory.mktemp("ckpt") / "step_000010" / "hf"
    model = build_classifier(tiny_model, 10, "mean", "sdpa")
    save_classifier(model, hf, tiny_model, {"faces": {"num_classes": 2, "labels": None}})
    return hf


def once_per_session(
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
    name: str,
    make: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    """``make(folder)``'s JSON record, made once per session: under pytest-xdist, the first worker
    to ask makes it under a lock in the session's shared temp folder and the others read it back
    (a session fixture alone would run once per worker)."""
    import json

    from filelock import FileLock

    if worker_id == "master":  # no xdist
        where = tmp_path_factory.mktemp(name)
        lock: Any = contextlib.nullcontext()
    else:
        shared = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
        where, lock = shared / name, FileLock(str(shared / f"{name}.lock"))
    with lock:
        record = where / f"{name}.json"
        if record.is_file():
            loaded: dict[str, Any] = json.loads(record.read_text())
            return loaded
        where.mkdir(parents=True, exist_ok=True)
        made = make(where)
        record.write_text(json.dumps(made))
        return made


# The session's demo job, which demo_run submits and measured_plan plans: the same job.
SESSION_DEMO_JOB: dict[str, Any] = {"max_steps": 120, "checkpoint_every": 40}


def _inputs(where: Path, demo_data: Path, tiny_model: Path) -> dict[str, str]:
    """The paths a session job's file names, by role: the worker that made a shared record wrote
    its own data and model paths, so two records' jobs compare with these put back to roles."""
    return {"job_dir": str(where), "data": str(demo_data), "model": str(tiny_model)}


@pytest.fixture(scope="session")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_model: Path, worker_id: str
) -> DemoRun:
    """The demo job (120 steps, a checkpoint every 40) submitted once for the whole session."""
    import subprocess
    import time

    from tests.helpers.cli import only_run, orch

    def make(where: Path) -> dict[str, Any]:
        job = demo_job(where, demo_data, tiny_model, **SESSION_DEMO_JOB)
        launched = time.time()
        proc = orch("submit", str(job), "--no-dashboard", cwd=where)
        exited = time.time()
        assert proc.returncode == 0, proc.stderr[-4000:]
        return {
            "job": str(job), "run": str(only_run(where)), "args": proc.args,
            "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "launched": launched, "exited": exited,
            "inputs": _inputs(where, demo_data, tiny_model),
        }  # fmt: skip

    saved = once_per_session(tmp_path_factory, worker_id, "demo_run", make)
    proc = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"],
                                       saved["stderr"])  # fmt: skip
    return DemoRun(Path(saved["job"]), Path(saved["run"]), proc, saved["launched"],
                   saved["exited"], saved["inputs"])  # fmt: skip


@pytest.fixture(scope="session")
def measured_plan(
    tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_model: Path, worker_id: str
) -> MeasuredPlan:
    """`orch plan --measure 2 --json` of the session demo run's job (the same job: 120 steps, a
    checkpoint every 40), once for the whole session: test_plan reads the plan, bench/plan_error's
    quick mode compares it with the session demo run."""
    import json
    import time

    from tests.helpers.cli import orch

    def make(where: Path) -> dict[str, Any]:
        job = demo_job(where, demo_data, tiny_model, **SESSION_DEMO_JOB)
        t0 = time.time()
        proc = orch("plan", str(job), "--json", "--measure", "2", "--no-dashboard", cwd=where)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return {"job": str(job), "plan": json.loads(proc.stdout), "plan_s": time.time() - t0,
                "runs": sorted(p.name for p in (where / "runs").iterdir()),
                "inputs": _inputs(where, demo_data, tiny_model)}  # fmt: skip

    saved = once_per_session(tmp_path_factory, worker_id, "measured_plan", make)
    return MeasuredPlan(Path(saved["job"]), saved["plan"], saved["plan_s"], saved["runs"],
                        saved["inputs"])  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs `orch`'s main() in this process configures the root logger for a
    terminal (orchestrator.logging_setup); later tests must not inherit its handlers, which
    hold the previous test's captured (and closed) stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

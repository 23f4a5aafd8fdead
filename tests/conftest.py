"""Shared fixtures: the real demo data and a tiny real Qwen2.5-VL, built once per session; the
markers that split the suite (``make test-fast`` runs what is not slow, e2e or slurm).

Helpers that test modules share (job builders, fakes, run-directory fabricators, subprocess
helpers) live in ``tests/helpers``; test modules import them from there, never from each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import demo_job, vqa_job
from tests.helpers.paths import ROOT
from tests.helpers.runs import DemoRun

# test_slurm.py and test_sbatch_render.py still import these from here (their home is now
# tests.helpers.jobs and tests.helpers.paths).
__all__ = ["ROOT", "demo_job", "vqa_job"]

# Tests never reach a hub or a wandb server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Modules whose every test needs the real local SLURM (cluster/local/slurm.sh).
SLURM_MODULES = {"test_slurm.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_slurm's tests are ``slurm``; ``e2e`` and ``slurm`` tests are ``slow`` too. Other slow
    tests (a Ray Train or DeepSpeed run, or more than ~5 s on 2 cores) carry ``slow`` themselves."""
    for item in items:
        if item.path.name in SLURM_MODULES:
            item.add_marker(pytest.mark.slurm)
        if any(item.get_closest_marker(name) is not None for name in ("e2e", "slurm")):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory, demo_data: Path, tiny_model: Path, worker_id: str
) -> DemoRun:
    """Under pytest-xdist the run is made once for all workers (the first to ask makes it under a
    lock in the session's shared temp folder; the others read it back), not once per worker."""
    import json
    import subprocess

    from filelock import FileLock

    from tests.helpers.cli import only_run, orch

    if worker_id == "master":  # no xdist
        where = tmp_path_factory.mktemp("demo_run")
        lock: Any = contextlib.nullcontext()
    else:
        shared = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
        where, lock = shared / "demo_run", FileLock(str(shared / "demo_run.lock"))
    with lock:
        record = where / "demo_run.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            proc = subprocess.CompletedProcess(saved["args"], saved["returncode"],
                                               saved["stdout"], saved["stderr"])  # fmt: skip
            return DemoRun(Path(saved["job"]), Path(saved["run"]), proc)
        where.mkdir(parents=True, exist_ok=True)
        job = demo_job(where, demo_data, tiny_model, max_steps=120, checkpoint_every=40)
        proc = orch("submit", str(job), "--no-dashboard", cwd=where)
        assert proc.returncode == 0, proc.stderr[-4000:]
        run = only_run(where)
        record.write_text(json.dumps({
            "job": str(job), "run": str(run), "args": proc.args, "returncode": proc.returncode,
            "stdout": proc.stdout, "stderr": proc.stderr,
        }))  # fmt: skip
        return DemoRun(job, run, proc)


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

"""Checkpoint retention (training.keep_last / keep_weights): the plan, the controller applying
it between evals, and removals interrupted by a SIGKILL, finished by the next controller."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.errors import SpecError
from orchestrator.contract.layout import RunDir, read_jsonl
from orchestrator.contract.spec import validate_spec
from orchestrator.core.controller import Controller
from orchestrator.core.retention import RetentionPlan, plan_retention
from orchestrator.tracking import MemoryTracker
from tests.helpers.fakes import FakeBackend, FakeTraining
from tests.helpers.jobs import make_spec
from tests.helpers.paths import ROOT
from tests.helpers.rundirs import add_checkpoint


def test_the_plan_keeps_the_resume_point_the_best_and_what_is_being_evaluated() -> None:
    steps = [10, 20, 30, 40]
    every = set(steps)
    # Nothing asked: nothing removed.
    assert not plan_retention(steps, every, keep_last=None, keep_weights=None, protected=set())
    # keep_last=1: only the latest stays resumable; every checkpoint keeps its weights.
    plan = plan_retention(steps, every, keep_last=1, keep_weights=None, protected=set())
    assert plan == RetentionPlan(remove_state=(10, 20, 30), remove_whole=())
    # keep_weights=2 as well: the two older ones go whole, except the protected best (10).
    plan = plan_retention(steps, every, keep_last=1, keep_weights=2, protected={10})
    assert plan == RetentionPlan(remove_state=(10, 30), remove_whole=(20,))
    # A state already removed is not removed again; a step being evaluated keeps its weights.
    plan = plan_retention(steps, {30, 40}, keep_last=2, keep_weights=2, protected={20})
    assert plan == RetentionPlan(remove_state=(), remove_whole=(10,))
    assert not plan_retention([], set(), keep_last=1, keep_weights=1, protected={5})


def test_contradictory_settings_are_refused_naming_the_keys(tmp_path: Path) -> None:
    raw = json.loads(make_spec(tmp_path).model_dump_json())
    with pytest.raises(SpecError, match=r"keep_weights \(1\) is less than training\.keep_last"):
        validate_spec(raw | {"training": raw["training"] | {"keep_last": 2, "keep_weights": 1}})
    with pytest.raises(SpecError, match=r"set training\.keep_last too"):
        validate_spec(raw | {"training": raw["training"] | {"keep_weights": 3}})


def _checkpoint(rundir: RunDir, step: int, files: int = 2) -> Path:
    """A complete checkpoint with DeepSpeed state and HF weights, ``files`` files in each."""
    add_checkpoint(rundir, step)
    d = ckpt.checkpoint_dir(rundir.checkpoints, step)
    for sub in (ckpt.DEEPSPEED_TAG, ckpt.HF_DIR):
        (d / sub).mkdir(exist_ok=True)
        for i in range(files):
            (d / sub / f"f{i}.bin").write_bytes(b"x" * 100)
    return d


def test_the_controller_removes_states_then_checkpoints_never_the_best_or_unevaluated(
    tmp_path: Path,
) -> None:
    raw = json.loads(make_spec(tmp_path).model_dump_json())
    spec = validate_spec(raw | {"training": raw["training"] | {"keep_last": 1, "keep_weights": 1}})
    rundir = RunDir(tmp_path / "run")
    rundir.create("", {})
    backend = FakeBackend(accuracy={10: 0.9, 20: 0.6, 30: 0.7, 40: 0.5})
    c = Controller(spec, rundir, backend, MemoryTracker(), FakeTraining(), poll_s=0)  # type: ignore[arg-type]

    def state() -> dict[int, str]:
        return {
            s: "resumable" if ckpt.resumable(d) else "weights"
            for s, d in rundir.complete_checkpoints().items()
        }

    _checkpoint(rundir, 10)
    _checkpoint(rundir, 20)
    c.iterate()  # parts of 10 and 20 submitted; 10's state goes (its eval needs weights only)
    assert state() == {10: "weights", 20: "resumable"}
    assert not (ckpt.checkpoint_dir(rundir.checkpoints, 10) / ckpt.DEEPSPEED_TAG).exists()
    c.iterate()  # merged: the best is 10, which keeps its weights
    assert state() == {10: "weights", 20: "resumable"}
    _checkpoint(rundir, 30)
    _checkpoint(rundir, 40)
    c.iterate()  # 20 goes whole; 30, not evaluated yet, keeps its weights beyond keep_weights
    assert state() == {10: "weights", 30: "weights", 40: "resumable"}
    c.iterate()  # 30 evaluated and not the best: it goes too
    assert state() == {10: "weights", 40: "resumable"}
    assert json.loads(rundir.best.read_text())["step"] == 10
    log = read_jsonl(rundir.retention_log)
    assert [(r["step"], r["removed"]) for r in log] == [
        (10, "state"), (30, "state"), (20, "checkpoint"), (30, "checkpoint"),
    ]  # fmt: skip
    assert all(r["bytes"] >= 200 for r in log)
    # The merged results of removed checkpoints stay.
    assert rundir.merged(20).is_file() and rundir.merged(30).is_file()


# A removal SIGKILLed halfway: shutil.rmtree deletes half of the files, then the process dies.
CRASH = """
import os, shutil, signal, sys
from pathlib import Path
from orchestrator.contract import checkpoint as ckpt

def half_then_die(path, *a, **k):
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    for p in files[: len(files) // 2]:
        p.unlink()
    os.kill(os.getpid(), signal.SIGKILL)

shutil.rmtree = half_then_die
getattr(ckpt, sys.argv[1])(Path(sys.argv[2]))
"""


@pytest.mark.parametrize("removal", ["remove_checkpoint", "remove_state"])
def test_a_removal_killed_halfway_is_never_taken_for_a_checkpoint_and_is_finished_later(
    tmp_path: Path, removal: str, caplog: pytest.LogCaptureFixture
) -> None:
    rundir = RunDir(tmp_path / "run")
    rundir.create("", {})
    doomed = _checkpoint(rundir, 10, files=50)
    _checkpoint(rundir, 20)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, removal, str(doomed)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if removal == "remove_checkpoint":  # gone from the checkpoints, its remains out of the way
        assert sorted(rundir.complete_checkpoints()) == [20]
        remains = rundir.checkpoints / ".removing-step_000010"
        assert remains.is_dir() and any(remains.rglob("*.bin"))
    else:  # still a checkpoint (its weights are whole), not a resumable one
        assert sorted(rundir.complete_checkpoints()) == [10, 20]
        assert not ckpt.resumable(doomed) and ckpt.latest_resumable(rundir.checkpoints) == (
            ckpt.checkpoint_dir(rundir.checkpoints, 20)
        )
        remains = doomed / ckpt.DEEPSPEED_TAG
        assert any(remains.rglob("*.bin")) and len(list((doomed / ckpt.HF_DIR).iterdir())) == 50

    spec = make_spec(tmp_path)
    with caplog.at_level(logging.WARNING, logger="orch.controller"):
        Controller(spec, rundir, FakeBackend(), MemoryTracker(), FakeTraining(), poll_s=0)  # type: ignore[arg-type]
    assert not remains.exists()
    assert "finished removing" in caplog.text and "interrupted by a crash" in caplog.text

"""Asynchronous checkpoints (training.async_checkpoint): the background export writes what a
synchronous save writes, the weights of the step it was asked for (the loop trains on while it
writes), COMPLETE last; its failure is raised in the loop and leaves no COMPLETE; no thread
outlives it; a preemption leaves every checkpoint complete. A real DeepSpeed engine on one gloo
rank, as tests/test_disk.py drives one, or the training loop on one rank without Ray
(bench/one_rank.py); the whole loop (Ray Train, two ranks, resume) is tests/test_e2e.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.contract import checkpoint as ckpt
from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT, repo_env
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow  # a subprocess importing torch and DeepSpeed: ~15 s each

ENGINE = """
import json, os, sys, threading
from pathlib import Path
import deepspeed, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1",
                  LOCAL_RANK="0")
job, run, store, stage = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
deepspeed.init_distributed(dist_backend="gloo", init_method=f"file://{store}", rank=0,
                           world_size=1)
import workers.train as wt
from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import load_spec
from workers.distributed import close_process_group
from workers.models.classifier import build_classifier
spec = load_spec(job)
torch.manual_seed(0)
model = build_classifier(spec.model.path, spec.num_labels, "mean", "sdpa")
config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
          "zero_optimization": {"stage": stage}}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(),
                                  lr=1e-2), config=config)

from workers.data.loader import Plan, make_loader
from workers.data.microbatch import Batcher, load_train_data
from workers.data.mixture import MixturePosition
data = load_train_data(spec)
plan = Plan(sizes={n: len(d) for n, d in data.items()},
            weights={n: d.mix_weight for n, d in spec.trained.items()}, seed=0, start_step=0,
            max_steps=8, grad_accum=1, global_micro=2, rank=0, world=1)
batches = iter(make_loader(plan, Batcher(spec, data), 0, 1))
attn = str(engine.module.hf_config._attn_implementation)
position = None


def train(steps):
    # Optimiser steps as the loop takes them (a forward through the engine, every ZeRO stage).
    global position
    for _ in range(steps):
        batch = next(batches)
        position = MixturePosition.from_json(batch.data_position)
        losses, _, zero = wt.forward_losses(engine, batch, torch.device("cpu"), torch.float32,
                                            attn)
        engine.backward(losses.mean() + zero)
        engine.step()

def export_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("orch-ckpt")]


def rundir(name):
    paths = RunDir(run / name)
    paths.checkpoints.mkdir(parents=True)
    return paths
"""

RACE = (
    ENGINE
    + """
train(1)
# The synchronous baseline of step 1.
wt.save_checkpoint(engine, spec, rundir("sync"), 1, position, 0)
# The same step asynchronously, its export held until the loop has trained three more steps:
# the checkpoint must hold the weights of step 1, not those of step 4.
gate, real_save = threading.Event(), wt.save_classifier
def held_save(*args, **kwargs):
    assert gate.wait(120)
    real_save(*args, **kwargs)
wt.save_classifier = held_save
paths = rundir("async")
saver = wt.Checkpointer(engine, spec, paths, 0, asynchronous=True)
saver.save(1, position)
target = ckpt.checkpoint_dir(paths.checkpoints, 1)
while_writing = {"complete": (target / ckpt.COMPLETE).exists(),
                 "state": (target / ckpt.DEEPSPEED_TAG).is_dir(),
                 "latest": str(ckpt.latest_complete(paths.checkpoints)),
                 "threads": export_threads()}
train(3)
gate.set()
saver.wait()
# The weights did move meanwhile: step 4, saved now, is another checkpoint.
wt.save_classifier = real_save
wt.save_checkpoint(engine, spec, rundir("later"), 4, position, 0)
events = [json.loads(x) for x in paths.train_events.read_text().splitlines()]
print(json.dumps({"while_writing": while_writing, "after": export_threads(), "events": events}))
close_process_group(engine)
"""
)


@pytest.mark.parametrize("stage", [2, 3])
def test_an_async_checkpoint_holds_its_steps_weights_and_equals_a_synchronous_one(
    tmp_path: Path, demo_data: Path, tiny_model: Path, stage: int
) -> None:
    out = _run(RACE, tmp_path, demo_data, tiny_model, stage)
    # While the export is held: the DeepSpeed state is there, COMPLETE is not, and nothing takes
    # the step for a checkpoint.
    assert out["while_writing"] == {
        "complete": False, "state": True, "latest": "None", "threads": ["orch-ckpt-1"],
    }  # fmt: skip
    assert out["after"] == []  # joined
    sync = ckpt.checkpoint_dir(tmp_path / "run" / "sync" / "checkpoints", 1)
    asyn = ckpt.checkpoint_dir(tmp_path / "run" / "async" / "checkpoints", 1)
    assert ckpt.resumable(asyn)
    # The same bytes as the synchronous save: weights, head, metadata, trainer state, digest.
    for name in ("model.safetensors", "classifier_head.pt", "orch_classifier.json"):
        assert (sync / "hf" / name).read_bytes() == (asyn / "hf" / name).read_bytes(), name
    assert sorted(p.name for p in (sync / "hf").iterdir()) == sorted(
        p.name for p in (asyn / "hf").iterdir()
    )
    assert ckpt.recorded_digest(sync) == ckpt.recorded_digest(asyn) is not None
    later = ckpt.checkpoint_dir(tmp_path / "run" / "later" / "checkpoints", 4)
    assert ckpt.recorded_digest(later) != ckpt.recorded_digest(asyn)  # training went on
    assert (sync / ckpt.TRAINER_STATE).read_text() == (asyn / ckpt.TRAINER_STATE).read_text()
    # The checkpoint event says how long the loop was held, and which way it was saved.
    (event,) = out["events"]
    assert event["event"] == "checkpoint" and event["step"] == 1 and event["async"] is True
    fields = ("deepspeed_s", "snapshot_s", "hf_export_s", "hf_block_s", "ckpt_block_s", "total_s")
    assert all(event[f] >= 0 for f in fields)
    sync_event = json.loads((tmp_path / "run" / "sync" / "logs" / "train_events.jsonl").read_text())
    assert sync_event["async"] is False and sync_event["snapshot_s"] == 0


FULL = (
    ENGINE
    + """
import shutil
from orchestrator.diskuse import disk_bytes
paths = rundir("run")
saver = wt.Checkpointer(engine, spec, paths, 0, asynchronous=True)
saver.save(1, None)
saver.wait()
first = ckpt.checkpoint_dir(paths.checkpoints, 1)
state = disk_bytes(first) - disk_bytes(first / ckpt.HF_DIR)  # all the DeepSpeed save writes
# Fill the filesystem until the next DeepSpeed state fits and its HF export does not.
free = shutil.disk_usage(run).free
(run / "filler").write_bytes(b"x" * max(0, free - state - (256 << 10)))
saver.save(2, None)  # the DeepSpeed state is written; the export fails in the thread
second = ckpt.checkpoint_dir(paths.checkpoints, 2)
pending = {"state": (second / ckpt.DEEPSPEED_TAG).is_dir(),
           "complete": (second / ckpt.COMPLETE).exists()}
error = None
import time
deadline = time.monotonic() + 120
try:
    while time.monotonic() < deadline:  # the loop between steps: the error stops it there
        saver.poll()
        time.sleep(0.05)
except wt.CheckpointSpaceError as e:
    error = str(e)
print(json.dumps({"pending": pending, "error": error, "after": export_threads()}))
close_process_group(engine)
"""
)


def test_a_full_disk_during_the_background_export_stops_the_loop_and_keeps_the_last_checkpoint(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """A real full disk (a 4 MB tmpfs, filled after the first checkpoint) hits the thread: the
    loop gets the same CheckpointSpaceError as a synchronous save, the partial checkpoint is
    removed, the previous complete one is intact, and no thread is left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        out = _run(FULL, tmp_path, demo_data, tiny_model, 2, run=small)
        assert out["pending"] == {"state": True, "complete": False}
        error = out["error"]
        assert error is not None, "the export's failure never reached the loop"
        assert "no space left" in error and "while saving checkpoint 2" in error, error
        assert "(step_000001) is intact" in error and "orch resume" in error
        checkpoints = small / "run" / "checkpoints"
        first = ckpt.checkpoint_dir(checkpoints, 1)
        assert ckpt.resumable(first) and ckpt.latest_resumable(checkpoints) == first
        assert not ckpt.checkpoint_dir(checkpoints, 2).exists()  # the partial one is gone
        assert out["after"] == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


READ_ONLY = (
    ENGINE
    + """
import subprocess
# The export is held until the filesystem has turned read-only under it.
gate, real_save = threading.Event(), wt.save_classifier
def held_save(*args, **kwargs):
    assert gate.wait(120)
    real_save(*args, **kwargs)
wt.save_classifier = held_save
paths = rundir("run")
saver = wt.Checkpointer(engine, spec, paths, 0, asynchronous=True)
saver.save(1, None)
subprocess.run(["mount", "-o", "remount,ro", str(run)], check=True)
gate.set()
error = None
try:
    saver.wait()
except wt.CheckpointExportError as e:
    error = f"{type(e.__cause__).__name__}: {e}"
target = ckpt.checkpoint_dir(paths.checkpoints, 1)
print(json.dumps({"error": error, "complete": (target / ckpt.COMPLETE).exists(),
                  "state": (target / ckpt.DEEPSPEED_TAG).is_dir(), "after": export_threads()}))
close_process_group(engine)
"""
)


def test_a_failed_background_export_is_raised_in_the_loop_and_leaves_no_complete(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """A real write error that is not a full disk (the checkpoints' filesystem turned read-only
    while the export was writing): the loop gets a CheckpointExportError naming the checkpoint
    and the cause; the checkpoint keeps its DeepSpeed state but no COMPLETE, so nothing takes it
    for one (the controller, retention and resume read only complete checkpoints)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(fs)], check=True)
    try:
        out = _run(READ_ONLY, tmp_path, demo_data, tiny_model, 2, run=fs)
    finally:
        subprocess.run(["umount", str(fs)], check=True)
    error = out["error"]
    assert error is not None, "the export's failure never reached the loop"
    assert error.startswith("OSError: checkpoint step_000001: its background export failed")
    assert "Read-only file system" in error and "it has no COMPLETE marker" in error, error
    assert "The latest complete checkpoint is none" in error
    assert out["state"] and not out["complete"]
    assert out["after"] == []


def _run(
    script: str,
    tmp_path: Path,
    demo_data: Path,
    tiny_model: Path,
    stage: int,
    run: Path | None = None,
) -> dict[str, Any]:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=4)
    run = run if run is not None else tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(job), str(run), str(tmp_path / "store"), str(stage)],
        cwd=ROOT, env=repo_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_preemption_leaves_every_checkpoint_complete_and_preempted_comes_last(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """A preemption during a run that checkpoints every 5 steps asynchronously: the controller's
    handler of SLURM's signal (SIGUSR1, what the batch script forwards SLURM's signal and a
    SIGTERM as; installed here, in this process) writes the run's preemption request, and the
    training loop (one rank, as a Ray Train worker runs it: bench/one_rank.py) saves where it
    is, joins the export, then says "preempted"; every checkpoint on disk is complete (none left
    half-written by a thread), the last one at the preempted step. The whole path, from the
    SLURM signal through the controller's exit code 3 to the requeue, is test_slurm's."""
    from orchestrator.contract.layout import RunDir
    from orchestrator.launch.submit import install_preemption_handlers

    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=2000, checkpoint_every=5)
    run = tmp_path / "runs" / "p"
    quiet = ("--set", "evaluation.during_training=false", "--set", "tracking.mode='disabled'")
    log = tmp_path / "one_rank.log"  # a file, not a pipe nobody reads while it trains
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "one_rank.py"), str(job), str(run), *quiet],
            cwd=ROOT, env=repo_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        first = ckpt.checkpoint_dir(run / "checkpoints", 10) / ckpt.COMPLETE
        wait_for(first.exists, 600, "the second checkpoint", 0.05)
        install_preemption_handlers(RunDir(run).preempt_request)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert RunDir(run).preempt_request.read_text() == "SIGUSR1\n"
        proc.wait(timeout=300)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    events = [json.loads(x) for x in (run / "logs" / "train_events.jsonl").open()]
    assert events[-1]["event"] == "preempted", events[-3:]
    at = events[-1]["step"]
    saved = [e["step"] for e in events if e["event"] == "checkpoint"]
    assert saved[-1] == at and all(e["async"] for e in events if e["event"] == "checkpoint")
    steps = sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir())
    assert steps == saved and steps[-1] == at
    assert sorted(ckpt.complete_checkpoints(run / "checkpoints")) == steps
    assert ckpt.latest_resumable(run / "checkpoints") == ckpt.checkpoint_dir(
        run / "checkpoints", at
    )

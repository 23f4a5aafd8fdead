"""Disk safety: the checkpoints' size estimated before any compute, checked against a real run's
checkpoints, and a run refused on a filesystem too small for them (a tmpfs the test mounts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.checks.disk import estimate, model_parameters
from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.spec import load_spec
from orchestrator.diskuse import disk_bytes
from tests.helpers.cli import orch
from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT
from tests.helpers.runs import DemoRun


@pytest.mark.e2e
def test_the_estimate_is_within_a_quarter_of_a_real_checkpoint(demo_run: DemoRun) -> None:
    spec = load_spec(demo_run.job)
    size = estimate(spec, model_parameters(spec.model.path), spec.training.max_steps or 0)
    assert size.checkpoints == len(list((demo_run.run / "checkpoints").iterdir()))
    real = ckpt.checkpoint_dir(demo_run.run / "checkpoints", 120)
    state, hf = disk_bytes(real / ckpt.DEEPSPEED_TAG), disk_bytes(real / ckpt.HF_DIR)
    assert 0.75 < size.state_bytes / state < 1.25, (size.state_bytes, state)
    assert 0.75 < size.hf_bytes / hf < 1.25, (size.hf_bytes, hf)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: smaller than one checkpoint of the tiny model (about 3 MB)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_run_whose_checkpoints_do_not_fit_is_refused_before_anything_starts(
    small_fs: Path, tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=120, checkpoint_every=40)
    runs = f"runs_dir='{small_fs / 'runs'}'"
    out = orch("submit", str(job), "--no-dashboard", "--set", runs, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    message = out.stderr
    assert "the run's checkpoints need about" in message and "MB free" in message
    assert "3 checkpoints over 120 steps" in message and str(small_fs) in message
    assert "training.keep_last = 1" in message  # what to change
    assert list(small_fs.iterdir()) == []  # nothing created, no compute spent
    assert "phase training" not in message

    # orch validate says the same, before a submission.
    check = orch("validate", str(job), "--set", runs, "--sample", "4", cwd=tmp_path)
    assert check.returncode == 2 and "the run's checkpoints need about" in check.stderr

    # With room for them (the run directory's own filesystem), validate gives the figures.
    fits = orch("validate", str(job), "--sample", "4", cwd=tmp_path)
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert "checkpoints: 3 over 120 steps" in fits.stderr


SAVE_TWICE = """
import json, os, sys
from pathlib import Path
import deepspeed, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1",
                  LOCAL_RANK="0")
job, run, store = map(Path, sys.argv[1:4])
deepspeed.init_distributed(dist_backend="gloo", init_method=f"file://{store}", rank=0,
                           world_size=1)
from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import load_spec
from workers.distributed import close_process_group
from workers.models.classifier import build_classifier
from workers.train import CheckpointSpaceError, save_checkpoint
spec = load_spec(job)
paths = RunDir(run)
paths.checkpoints.mkdir(parents=True)
model = build_classifier(spec.model.path, spec.num_labels, "mean", "sdpa")
config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
          "zero_optimization": {"stage": 2}}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()),
                                  config=config)
save_checkpoint(engine, spec, paths, 1, None, 0)
try:
    save_checkpoint(engine, spec, paths, 2, None, 0)
    second = "saved"
except CheckpointSpaceError as e:
    second = str(e)
close_process_group(engine)
print(json.dumps({"second": second}))
"""


def test_a_disk_that_fills_during_a_save_is_a_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """A 3 MB filesystem holds one checkpoint of the tiny model (2 MB before any optimizer
    step), not two: the second save says what happened and what to do, and leaves the first
    complete and resumable."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        job = demo_job(tmp_path, demo_data, tiny_model, max_steps=2)
        proc = subprocess.run(
            [sys.executable, "-c", SAVE_TWICE, str(job), str(small / "run"), str(tmp_path / "s")],
            cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        second = json.loads(proc.stdout.strip().splitlines()[-1])["second"]
        assert "no space left" in second and "while saving checkpoint 2" in second, second
        assert "(step_000001) is intact" in second and "orch resume" in second
        checkpoints = small / "run" / "checkpoints"
        first = ckpt.checkpoint_dir(checkpoints, 1)
        assert ckpt.resumable(first) and ckpt.latest_resumable(checkpoints) == first
        assert not ckpt.checkpoint_dir(checkpoints, 2).exists()  # the partial one is gone
    finally:
        subprocess.run(["umount", str(small)], check=True)

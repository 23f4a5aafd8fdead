"""Disk safety: the checkpoints' size estimated before any compute, checked against a real run's
checkpoints, and a run refused on a filesystem too small for them (a tmpfs the test mounts)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.checks.disk import estimate, model_parameters
from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.spec import load_spec
from orchestrator.core.retention import disk_bytes
from tests.helpers.cli import orch
from tests.helpers.jobs import demo_job
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

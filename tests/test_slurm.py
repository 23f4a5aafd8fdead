"""Eval parts as SLURM jobs, against a real one-node SLURM that these tests start and stop
(cluster/local/slurm.sh, Debian's slurm-wlm). Without root they skip, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.base import Cancelled, Failed, Succeeded
from orchestrator.backends.local import LocalBackend
from orchestrator.backends.slurm import SlurmBackend
from tests.conftest import ROOT, demo_job
from tests.test_backends import comparable, job, wait

SLURM_SH = ROOT / "cluster" / "local" / "slurm.sh"


@pytest.fixture(scope="module")
def slurm() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (cluster/local/slurm.sh installs and starts it)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no slurmctld and no apt-get to install it")
    subprocess.run([str(SLURM_SH), "up"], check=True, timeout=300)
    yield
    subprocess.run([str(SLURM_SH), "down"], check=True, timeout=120)


def backend(tmp_path: Path) -> SlurmBackend:
    return SlurmBackend(tmp_path / "slurm", cpus_per_task=1, mem_gb=2, timeout_min=10)


def test_a_part_on_slurm_gives_the_same_result_as_locally(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    b = backend(tmp_path)
    out = tmp_path / "slurm" / "faces.json"
    job_id = b.submit(job(checkpoint, demo_data, out, backend="slurm"), tmp_path / "faces.log")
    assert wait(b, job_id) == Succeeded(out)
    state = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True
    )
    assert f"JobId={job_id} JobName=orch-eval-10" in state.stdout  # a real SLURM job
    local = LocalBackend()
    out_local = tmp_path / "local" / "faces.json"
    assert wait(local, local.submit(job(checkpoint, demo_data, out_local), tmp_path / "l.log")) == (
        Succeeded(out_local)
    )
    assert comparable(out) == comparable(out_local)


def test_one_job_array_per_checkpoint(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    b = backend(tmp_path)
    parts = [
        (job(checkpoint, demo_data, tmp_path / "a.json"), tmp_path / "a.log"),
        (job(checkpoint, demo_data, tmp_path / "b.json", eval_ratio=1.0), tmp_path / "b.log"),
    ]
    ids = b.submit_array(parts)
    assert len({i.split("_")[0] for i in ids}) == 1 and all("_" in i for i in ids)  # one array
    outcomes: dict[str, object] = {}
    deadline = time.time() + 120
    while len(outcomes) < len(ids) and time.time() < deadline:
        outcomes |= b.poll()  # one poll may end several elements
        time.sleep(0.1)
    assert sorted(outcomes) == sorted(ids)
    assert all(isinstance(o, Succeeded) for o in outcomes.values()), outcomes
    assert json.loads((tmp_path / "b.json").read_text())["n"] == 60


def test_failure_and_cancel_are_typed_outcomes(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    b = backend(tmp_path)
    bad = job(checkpoint, demo_data, tmp_path / "x.json", manifest=str(tmp_path / "nope.jsonl"))
    outcome = wait(b, b.submit(bad, tmp_path / "bad.log"))
    assert isinstance(outcome, Failed) and "manifest not found" in outcome.reason
    slow = job(
        checkpoint,
        demo_data,
        tmp_path / "slow.json",
        dataset="digits",
        num_classes=10,
        manifest=str(demo_data / "digits" / "test.jsonl"),
        eval_ratio=1.0,
        batch_size=8,
    )
    job_id = b.submit(slow, tmp_path / "slow.log")
    b.cancel(job_id)
    assert wait(b, job_id, timeout=60) == Cancelled()
    assert not (tmp_path / "slow.json").exists()


def test_demo_job_with_eval_parts_on_slurm(
    slurm: None, tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    spec = demo_job(tmp_path, demo_data, tiny_model, max_steps=80, checkpoint_every=40)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--no-dashboard",
         "--run-name", "on-slurm", "--set", "evaluation.backend='slurm'",
         "--set", "evaluation.slurm.mem_gb=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "on-slurm"
    for step in (40, 80):
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert (
            sorted(merged["datasets"]) == ["digits", "faces", "textures"] and not merged["missing"]
        )
        part = json.loads((run / "eval" / f"step_{step:06d}" / "faces.json").read_text())
        assert part["backend"] == "slurm"
    ledger = [json.loads(p.read_text()) for p in (run / "ledger").glob("step_*/*.json")]
    # One job array per checkpoint: the three parts of a step share a SLURM array id.
    for step in (40, 80):
        arrays = {e["job_id"].split("_")[0] for e in ledger if e["step"] == step}
        assert len(arrays) == 1, ledger
    assert (run / "eval" / "final.json").is_file()

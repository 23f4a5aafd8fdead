"""`orch submit --address`: the controller as a Ray job on a real Ray head that these tests start
and stop (cluster/local/ray.sh, 127.0.0.1, Ray 2.60's token authentication on); status, logs
and cancel through the Jobs API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.jobs import demo_job
from tests.helpers.paths import ROOT
from tests.helpers.ray_jobs import orch, wait_state
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

RAY_SH = ROOT / "cluster" / "local" / "ray.sh"
PORT, DASHBOARD = 6390, 8266
ADDRESS = f"http://127.0.0.1:{DASHBOARD}"


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Ray head with its own HOME (its auth token lands in HOME/.ray/auth_token)."""
    home = tmp_path_factory.mktemp("home")
    # Short: Ray's socket paths under it must fit in 107 bytes (pytest's own temp paths, under
    # pytest-xdist, do not).
    ray_tmp = tempfile.mkdtemp(prefix="orch-ray-", dir="/tmp")
    env = os.environ | {
        "HOME": str(home),
        "ORCH_RAY_PORT": str(PORT),
        "ORCH_RAY_DASHBOARD_PORT": str(DASHBOARD),
        "ORCH_RAY_TMP": ray_tmp,
    }
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_AUTH_TOKEN", None)
    try:
        up = subprocess.run(
            [str(RAY_SH), "up"], env=env, capture_output=True, text=True, timeout=180
        )
        assert up.returncode == 0, up.stdout + up.stderr
        again = subprocess.run([str(RAY_SH), "up"], env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "already up" in again.stdout  # idempotent
        yield env
    finally:
        down = subprocess.run([str(RAY_SH), "down"], env=env, capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
    status = subprocess.run([str(RAY_SH), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "stopped" in status.stdout
    shutil.rmtree(ray_tmp)


def train_workers(env: dict[str, str]) -> list[psutil.Process]:
    """The Ray Train workers of the head that ``env`` started: they inherit its environment,
    ORCH_RAY_TMP (this module's own directory) included. Other Ray clusters on the machine have
    workers of the same name."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if "RayTrainWorker" in (p.info["name"] or "") and (
                p.environ().get("ORCH_RAY_TMP") == env["ORCH_RAY_TMP"]
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_a_job_submitted_with_address_runs_on_the_head_and_its_logs_are_readable(
    ray_head: dict[str, str], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=40, checkpoint_every=20)
    submitted = time.time()
    out = orch(ray_head, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "rj")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "orch-rj"  # named after the run, to be found in the dashboard
    run = tmp_path / "runs" / "rj"
    # The client returns at once, while the controller runs on the head: the run is not over.
    assert not (run / "eval" / "final.json").exists()
    recorded = json.loads((run / "ray_job.json").read_text())
    assert recorded["submission_id"] == "orch-rj" and recorded["address"] == ADDRESS

    final = wait_state(ray_head, tmp_path, "rj", {"SUCCEEDED", "FAILED", "STOPPED"}, 800, submitted)
    logs = orch(ray_head, tmp_path, "logs", "rj")
    assert final["status"] == "SUCCEEDED", logs.stdout[-3000:]
    assert logs.returncode == 0
    # The driver's output, read back through the Jobs API, then the run's own log files.
    assert "==> Ray job orch-rj at http://127.0.0.1:8266 <==" in logs.stdout
    api_part = logs.stdout.split("==> Ray job", 1)[1].split("\n==> ", 1)[0]
    assert "run rj finished (exit 0)" in api_part
    assert (run / "eval" / "step_000040.json").is_file() and (run / "eval" / "final.json").is_file()

    # The same job as Ray's own client sees it (token mode, the head's token), with the run in
    # its metadata.
    probe = subprocess.run(
        [sys.executable, "-c", "import json, sys; from ray.job_submission import "
         "JobSubmissionClient as C; print(json.dumps(C(sys.argv[1]).get_job_info('orch-rj')"
         ".metadata))", ADDRESS],
        env=ray_head | {"RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1])["orch_run"] == "rj"
    token = (Path(ray_head["HOME"]) / ".ray" / "auth_token").read_text().strip()
    # The token is a secret: nowhere in the run directory.
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path

    # A second submission of the same run gets its own id and continues the run.
    resubmitted = time.time()
    again = orch(ray_head, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "rj")
    assert again.returncode == 0 and again.stdout.strip() == "orch-rj-2", again.stderr[-2000:]
    second = wait_state(ray_head, tmp_path, "rj", {"SUCCEEDED", "FAILED"}, 600, resubmitted)
    assert second["status"] == "SUCCEEDED"


def test_cancel_stops_the_ray_job(
    ray_head: dict[str, str], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=5000, checkpoint_every=5000)
    out = orch(ray_head, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "long")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = tmp_path / "runs" / "long" / "logs" / "train_metrics.jsonl"
    try:
        wait_for(metrics.is_file, 600, "the first training metrics", interval=0.5)
    except AssertionError as e:
        raise AssertionError(orch(ray_head, tmp_path, "logs", "long").stdout[-3000:]) from e
    assert train_workers(ray_head), "training runs, yet no train worker of this head was found"
    cancel = orch(ray_head, tmp_path, "cancel", "long")
    assert cancel.returncode == 0, cancel.stderr[-2000:]
    assert "stop requested for Ray job orch-long" in cancel.stderr
    assert wait_state(ray_head, tmp_path, "long", {"STOPPED"}, 300)["status"] == "STOPPED"
    # Training stopped with it: its workers exit (waited on with a deadline, not a fixed sleep),
    # so no metric is written after the cancel.
    wait_for(lambda: not train_workers(ray_head), 300, "the train workers to exit")


def test_without_the_token_the_error_says_what_to_do(
    ray_head: dict[str, str], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=10)
    stranger = ray_head | {"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}
    out = orch(stranger, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "x")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "RAY_AUTH_TOKEN" in out.stderr
    assert not (tmp_path / "runs" / "x").exists()  # nothing created before the head said no

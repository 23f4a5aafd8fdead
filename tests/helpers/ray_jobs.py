"""The `orch` CLI against a Ray cluster's Jobs API, for the tests that start one
(test_ray_nodes, test_node_loss): run a verb, read a run's Ray job state, wait
for one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers.paths import repo_env


def orch(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=repo_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_state(env: dict[str, str], cwd: Path, run: str) -> dict[str, Any]:
    out = orch(env, cwd, "status", run, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    job: dict[str, Any] = json.loads(out.stdout)["ray_job"]
    return job


def wait_state(
    env: dict[str, str],
    cwd: Path,
    run: str,
    states: set[str],
    timeout: float,
    ended_after: float | None = None,
) -> dict[str, Any]:
    """The run's Ray job once its status is one of ``states`` (or as it is after ``timeout``).
    With ``ended_after`` (a time), `orch status` is asked every 10 s only until the controller's
    durable end is written after it: each `orch status` costs a second of CPU (a Jobs API
    client), which a poll every second would take from the run on this two-core machine."""
    deadline = time.monotonic() + timeout
    if ended_after is not None:
        end = cwd / "runs" / run / "logs" / "controller_end.json"
        last_asked = time.monotonic()
        while not (end.is_file() and end.stat().st_mtime > ended_after):
            if time.monotonic() > deadline:
                return job_state(env, cwd, run)
            if time.monotonic() - last_asked > 10:  # a controller that died writes no end
                job = job_state(env, cwd, run)
                if job["status"] in states:
                    return job
                last_asked = time.monotonic()
            time.sleep(0.5)
    while True:
        job = job_state(env, cwd, run)
        if job["status"] in states or time.monotonic() > deadline:
            return job
        time.sleep(1)

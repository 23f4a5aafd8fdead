"""The `orch` CLI against a Ray cluster's Jobs API, for the tests that start one
(test_ray_nodes, test_node_loss): run a verb, read a run's Ray job state, wait
for one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.helpers.paths import ROOT, repo_env


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


RAY_SH = ROOT / "cluster" / "local" / "ray.sh"


def ray_sh(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """cluster/local/ray.sh ARGS with ``env`` (its ports, temp dir and CPUs)."""
    return subprocess.run(
        [str(RAY_SH), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def cluster_processes(ray_tmp: str) -> list[str]:
    """The command lines (cut short) of every process of the cluster whose temp dir is
    ``ray_tmp``: its raylets, GCS, agents and workers all name it."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f"{ray_tmp}/" in cmd:
            found.append(cmd[:120])
    return found


@contextlib.contextmanager
def local_ray_cluster(
    tmp_path_factory: Any, prefix: str, port: int, dashboard: int, **cpus: str
) -> Iterator[dict[str, str]]:
    """The environment of a local Ray cluster of its own (HOME for its token, a short temp dir
    for Ray's socket paths, GCS and dashboard ports, ``cpus``: ORCH_RAY_CPUS and the like) for
    ray.sh and orch; the caller brings it up. On exit it is brought down, and nothing of it is
    left running."""
    home = tmp_path_factory.mktemp("home")
    ray_tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths
    env = repo_env(os.environ, HOME=str(home), ORCH_RAY_PORT=str(port),
                   ORCH_RAY_DASHBOARD_PORT=str(dashboard), ORCH_RAY_TMP=ray_tmp,
                   **cpus)  # fmt: skip
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_AUTH_TOKEN", None)
    try:
        yield env
    finally:
        down = ray_sh(env, "down")
        assert down.returncode == 0, down.stderr
    status = ray_sh(env, "status")
    assert status.returncode == 1 and "stopped" in status.stdout
    assert not cluster_processes(ray_tmp)  # every raylet and every worker gone
    shutil.rmtree(ray_tmp)

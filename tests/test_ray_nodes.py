"""`orch submit --address`: the controller as a Ray job on a real two-node Ray cluster that these
tests start and stop on this machine (cluster/local/ray.sh up --nodes 2: a head and a second
raylet joining it, each its own Ray node with one logical CPU, so Ray Train's two workers cannot
share a node; Ray 2.60's token authentication on). Training across the nodes, status, logs and
cancel through the Jobs API; where each rank and each eval part ran is read from the run
directory."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers.jobs import demo_job, demo_project
from tests.helpers.paths import ROOT
from tests.helpers.ray_jobs import local_ray_cluster, orch, ray_sh, wait_state
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

# Away from Ray's defaults and from tests/test_node_loss.py's cluster, which may run beside it.
PORT, DASHBOARD = 6410, 8286
ADDRESS = f"http://127.0.0.1:{DASHBOARD}"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A two-node Ray cluster of one CPU a node, with its own HOME (its token) and temp dir;
    its node ids."""
    with local_ray_cluster(tmp_path_factory, "orch-rn-", PORT, DASHBOARD, ORCH_RAY_CPUS="1") as env:
        up = ray_sh(env, "up", "--nodes", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        again = ray_sh(env, "up", "--nodes", "2")
        assert again.returncode == 0 and "already up, 2 node(s)" in again.stdout  # idempotent
        status = ray_sh(env, "status")
        assert status.returncode == 0, status.stderr
        listed = re.findall(r"^(orch-node-\d+) ([0-9a-f]{56}) [0-9.]+ 1 CPUs", status.stdout, re.M)
        nodes = dict(listed)
        assert sorted(nodes) == ["orch-node-1", "orch-node-2"], status.stdout
        yield {"env": env, "nodes": nodes}


DEMO = str(ROOT / "jobs" / "demo_mix.toml")


def test_a_job_submitted_with_address_trains_on_both_nodes_and_its_logs_are_readable(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    env, nodes = two_nodes["env"], two_nodes["nodes"]
    cwd = demo_project(tmp_path, demo_data, tiny_model)
    submitted = time.time()
    args = [
        "submit", DEMO, "--address", ADDRESS, "--run-name", "two",
        "--set", "training.max_steps=20", "--set", "training.checkpoint_every=10",
    ]  # fmt: skip
    out = orch(env, cwd, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "orch-two"  # named after the run, to be found in the dashboard
    run = cwd / "runs" / "two"
    # The client returns at once, while the controller runs on the head: the run is not over.
    assert not (run / "eval" / "final.json").exists()
    recorded = json.loads((run / "ray_job.json").read_text())
    assert recorded["submission_id"] == "orch-two" and recorded["address"] == ADDRESS
    final = wait_state(env, cwd, "two", {"SUCCEEDED", "FAILED", "STOPPED"}, 800, submitted)
    logs = orch(env, cwd, "logs", "two")
    assert final["status"] == "SUCCEEDED", logs.stdout[-3000:]
    logger.info("2-node demo run (20 steps): %.1f s from submission", time.time() - submitted)
    # The driver's output, read back through the Jobs API, then the run's own log files.
    assert logs.returncode == 0
    assert f"==> Ray job orch-two at {ADDRESS} <==" in logs.stdout
    api_part = logs.stdout.split("==> Ray job", 1)[1].split("\n==> ", 1)[0]
    assert "run two finished (exit 0)" in api_part

    # Where each rank ran: the training loop records it when it starts.
    events = [json.loads(x) for x in (run / "logs" / "train_events.jsonl").read_text().splitlines()]
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 1 and started[0]["world_size"] == 2
    workers = started[0]["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == set(nodes.values())  # one rank on each node
    assert len({w["node_ip"] for w in workers}) == 2  # each node its own address
    # Ray Train sees two nodes (it numbers them by address): each rank alone on its node.
    assert sorted(w["node_rank"] for w in workers) == [0, 1]
    assert all(w["local_rank"] == 0 for w in workers)

    # Checkpoints, every one evaluated and merged, and the final full eval.
    assert all((run / "checkpoints" / f"step_{s:06d}" / "COMPLETE").exists() for s in (10, 20))
    for name in ("step_000010", "step_000020", "final"):
        merged = json.loads((run / "eval" / f"{name}.json").read_text())
        assert sorted(merged["datasets"]) == ["digits", "faces", "textures"], merged
        assert merged["missing"] == {}, (name, merged["missing"])
    # Eval parts ran as Ray tasks on the cluster's nodes (any node: they are not pinned).
    part_logs = list((run / "logs" / "eval").rglob("*.log"))
    found = (re.findall(r"on Ray node ([0-9a-f]{56})", p.read_text()) for p in part_logs)
    ran_on = {node for nodes_of_part in found for node in nodes_of_part}
    assert ran_on and ran_on <= set(nodes.values()), (ran_on, nodes)
    logger.info("eval parts ran on %s", sorted(k for k, v in nodes.items() if v in ran_on))
    rows = [json.loads(x) for x in (run / "logs" / "train_metrics.jsonl").read_text().splitlines()]
    logger.info("step time on 2 nodes: %s s", [round(r["step_time_s"], 3) for r in rows])

    # The same job as Ray's own client sees it (token mode, the head's token), with the run in
    # its metadata.
    probe = subprocess.run(
        [sys.executable, "-c", "import json, sys; from ray.job_submission import "
         "JobSubmissionClient as C; print(json.dumps(C(sys.argv[1]).get_job_info('orch-two')"
         ".metadata))", ADDRESS],
        env=env | {"RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1])["orch_run"] == "two"
    token = (Path(env["HOME"]) / ".ray" / "auth_token").read_text().strip()
    # The token is a secret: nowhere in the run directory.
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path

    # A second submission of the same run gets its own id and continues the run.
    resubmitted = time.time()
    again = orch(env, cwd, *args)
    assert again.returncode == 0 and again.stdout.strip() == "orch-two-2", again.stderr[-2000:]
    second = wait_state(env, cwd, "two", {"SUCCEEDED", "FAILED"}, 600, resubmitted)
    assert second["status"] == "SUCCEEDED"


def train_workers(env: dict[str, str]) -> list[psutil.Process]:
    """The Ray Train workers of the cluster that ``env`` started: they inherit its environment,
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


def test_cancel_stops_the_ray_job(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    env = two_nodes["env"]
    # One rank: what is under test is the Ray job stopping with everything under it.
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=5000, checkpoint_every=5000,
                   num_workers=1)  # fmt: skip
    out = orch(env, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "long")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = tmp_path / "runs" / "long" / "logs" / "train_metrics.jsonl"
    try:
        wait_for(metrics.is_file, 600, "the first training metrics", interval=0.5)
    except AssertionError as e:
        raise AssertionError(orch(env, tmp_path, "logs", "long").stdout[-3000:]) from e
    assert train_workers(env), "training runs, yet no train worker of this cluster was found"
    cancel = orch(env, tmp_path, "cancel", "long")
    assert cancel.returncode == 0, cancel.stderr[-2000:]
    assert "stop requested for Ray job orch-long" in cancel.stderr
    assert wait_state(env, tmp_path, "long", {"STOPPED"}, 300)["status"] == "STOPPED"
    # Training stopped with it: its workers exit (waited on with a deadline, not a fixed sleep),
    # so no metric is written after the cancel.
    wait_for(lambda: not train_workers(env), 300, "the train workers to exit")


def test_without_the_token_the_error_says_what_to_do(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model, max_steps=10)
    stranger = two_nodes["env"] | {"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}
    out = orch(stranger, tmp_path, "submit", str(job), "--address", ADDRESS, "--run-name", "x")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "RAY_AUTH_TOKEN" in out.stderr
    assert not (tmp_path / "runs" / "x").exists()  # nothing created before the head said no


def test_training_that_the_cluster_cannot_hold_is_refused_before_the_run_starts(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    env = two_nodes["env"]
    cwd = demo_project(tmp_path, demo_data, tiny_model)
    for setting, named in [
        ("training.num_workers=3", "training.num_workers = 3 (each 1 CPU(s)"),
        ("training.cpus_per_worker=2", "training.num_workers = 2 (each 2 CPU(s)"),
        ("training.use_gpu=true", "training.num_workers = 2 (each 1 CPU(s) and 1 GPU"),
    ]:
        out = orch(env, cwd, "submit", DEMO, "--address", ADDRESS, "--run-name", "big",
                   "--set", setting)  # fmt: skip
        assert out.returncode == 2, (setting, out.stderr[-2000:])
        assert named in out.stderr, out.stderr[-2000:]
        assert f"does not fit the Ray cluster at {ADDRESS}: its 2 node(s)" in out.stderr
        assert "orch-node-1: 1 CPUs" in out.stderr and "orch-node-2: 1 CPUs" in out.stderr
        assert not (cwd / "runs" / "big").exists()  # refused before anything was created
    out = orch(env, cwd, "submit", DEMO, "--address", ADDRESS, "--run-name", "big",
               "--set", "evaluation.cpus_per_task=2")  # fmt: skip
    assert out.returncode == 2 and "evaluation.cpus_per_task = 2" in out.stderr, out.stderr[-2000:]
    assert "largest node has 1 CPUs" in out.stderr


def test_a_bad_node_count_is_refused_naming_the_flag(tmp_path: Path) -> None:
    env = os.environ | {"HOME": str(tmp_path), "ORCH_RAY_TMP": "/tmp/orch-rn-never"}
    for args in (["--nodes", "0"], ["--nodes", "two"], ["--nodes"]):
        out = ray_sh(env, "up", *args, timeout=30)
        assert out.returncode == 2, (args, out.stderr)
        assert "--nodes" in out.stderr and "expected a whole number >= 1" in out.stderr
    out = ray_sh(env, "up", "--node", "2", timeout=30)
    assert out.returncode == 2 and "usage: " in out.stderr and "up [--nodes N]" in out.stderr
    assert not Path("/tmp/orch-rn-never").exists()  # nothing was started

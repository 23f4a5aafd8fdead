"""A node lost mid-run, survived: `orch submit jobs/demo_mix.toml --address` on a two-node Ray
cluster of this machine (cluster/local/ray.sh), one rank on each node, and node orch-node-2
killed whole (`ray.sh kill-node 2`: its raylet and every process under it) while it runs a
training rank and the first checkpoint's eval parts. The layout makes both placements certain:
the head has 2 CPUs, orch-node-2 3; the workers (1 CPU each) are spread, one per node; an eval
part takes 2 CPUs, which only orch-node-2 has free while training runs. After the loss the head
alone holds both workers. Everything is asserted on the run directory and `orch status`."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import demo_project
from tests.helpers.paths import ROOT
from tests.helpers.ray_jobs import cluster_processes, local_ray_cluster, orch, ray_sh, wait_state

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

# Away from Ray's defaults and tests/test_ray_nodes.py's cluster (6410/8286).
PORT, DASHBOARD = 6450, 8326
ADDRESS = f"http://127.0.0.1:{DASHBOARD}"
DEMO = str(ROOT / "jobs" / "demo_mix.toml")
# About 0.1 s a step here: the first checkpoint's eval starts some 30 steps after it, while
# training still has 180 steps to go.
STEPS, EVERY = 240, 60
CHECKPOINTS = list(range(EVERY, STEPS + 1, EVERY))


def node_processes(ray_tmp: str, ip: str) -> list[str]:
    """The processes of the node at ``ip``: its raylet and agents name its address."""
    return [c for c in cluster_processes(ray_tmp) if f"={ip}" in c or f"{ip}:" in c]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The module's two-node Ray cluster (the head 2 CPUs, orch-node-2 3), started once: each
    test brings a lost node back (`ray.sh up --nodes 2`) before it starts."""
    with local_ray_cluster(tmp_path_factory, "orch-nl-", PORT, DASHBOARD, ORCH_RAY_CPUS="3",
                           ORCH_RAY_HEAD_CPUS="2") as env:  # fmt: skip
        yield {"env": env, "tmp": env["ORCH_RAY_TMP"]}


@pytest.fixture
def two_nodes(cluster: dict[str, Any]) -> dict[str, Any]:
    """The module's cluster with both nodes up: its env, nodes (name: id, ip, CPUs), temp dir."""
    env = cluster["env"]
    up = ray_sh(env, "up", "--nodes", "2")
    assert up.returncode == 0, up.stdout + up.stderr
    status = ray_sh(env, "status")
    listed = re.findall(r"^(orch-node-\d+) ([0-9a-f]{56}) ([0-9.]+) (\d+) CPUs", status.stdout,
                        re.M)  # fmt: skip
    nodes = {name: {"id": nid, "ip": ip, "cpus": int(c)} for name, nid, ip, c in listed}
    assert {n: v["cpus"] for n, v in nodes.items()} == {"orch-node-1": 2, "orch-node-2": 3}
    return cluster | {"nodes": nodes}


def events_of(run: Path) -> list[dict[str, Any]]:
    path = run / "logs" / "train_events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def wait_for(what: str, check: Any, timeout: float, run: Path) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    log = run / "logs" / "controller.log"
    tail = log.read_text()[-3000:] if log.is_file() else "(no controller log)"
    raise AssertionError(f"timed out waiting for {what}; controller log:\n{tail}")


def test_a_node_lost_mid_run_is_survived_and_status_shows_it(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    env, nodes, ray_tmp = two_nodes["env"], two_nodes["nodes"], two_nodes["tmp"]
    lost_id, head_id = nodes["orch-node-2"]["id"], nodes["orch-node-1"]["id"]
    cwd = demo_project(tmp_path, demo_data, tiny_model)
    submitted = time.time()
    out = orch(
        env, cwd, "submit", DEMO, "--address", ADDRESS, "--run-name", "loss",
        "--set", f"training.max_steps={STEPS}", "--set", f"training.checkpoint_every={EVERY}",
        "--set", "training.placement_strategy='SPREAD'", "--set", "training.max_failures=1",
        "--set", "evaluation.cpus_per_task=2", "--set", "evaluation.retry_backoff_s=1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = cwd / "runs" / "loss"

    # One rank on each node; the first checkpoint's eval parts start on orch-node-2.
    started = wait_for(
        "the first start", lambda: [e for e in events_of(run) if e["event"] == "started"], 300, run
    )
    assert {w["node_id"] for w in started[0]["workers"]} == {head_id, lost_id}
    assert {w["node_name"] for w in started[0]["workers"]} == {"orch-node-1", "orch-node-2"}
    lost_ranks = sorted(w["rank"] for w in started[0]["workers"] if w["node_id"] == lost_id)
    part_log = run / "logs" / "eval" / f"step_{EVERY:06d}" / "digits.attempt1.log"
    wait_for(
        "the first checkpoint's eval on orch-node-2",
        lambda: (
            part_log.is_file() and f"on Ray node {lost_id} (orch-node-2" in part_log.read_text()
        ),
        300,
        run,
    )
    assert not any(e["event"] == "finished" for e in events_of(run)), "trained too fast to lose"
    kill = ray_sh(env, "kill-node", "2", timeout=30)
    killed_at = time.time()
    assert kill.returncode == 0 and "killed orch-node-2" in kill.stdout, kill.stderr
    assert not node_processes(ray_tmp, nodes["orch-node-2"]["ip"])  # the whole node is gone

    final = wait_state(env, cwd, "loss", {"SUCCEEDED", "FAILED", "STOPPED"}, 900, submitted)
    logs = orch(env, cwd, "logs", "loss")
    assert final["status"] == "SUCCEEDED", logs.stdout[-4000:]
    logger.info("node-loss run (%d steps): %.1f s from submission", STEPS, time.time() - submitted)

    # The train events: a failure naming the lost node, then a restart on the head alone,
    # from the latest complete checkpoint, to the end.
    events = events_of(run)
    starts = [e for e in events if e["event"] == "started"]
    assert len(starts) == 2, [e["event"] for e in events]
    failed = [e for e in events if e["event"] == "worker_group_failed"]
    assert failed and failed[0]["time"] < starts[1]["time"]
    restart = starts[1]
    # Ray Train's errors: the rank on orch-node-2 unreachable (its node may not be declared
    # dead yet then); by the restart, Ray has declared it dead.
    assert any(nodes["orch-node-2"]["ip"] in err for err in failed[0]["errors"].values()), failed
    lost = {n["node_name"] for e in [*failed, restart] for n in e["lost_nodes"]}
    assert lost == {"orch-node-2"}, (failed, restart)
    assert {w["node_id"] for w in restart["workers"]} == {head_id}
    assert restart["step"] in CHECKPOINTS
    assert restart["resumed_from"].endswith(f"step_{restart['step']:06d}")
    assert [e["step"] for e in events if e["event"] == "finished"] == [STEPS]
    logger.info(
        "node killed -> worker group failure recorded: %.1f s; -> training running again "
        "(started event): %.1f s; resumed at step %d",
        failed[0]["time"] - killed_at, restart["time"] - killed_at, restart["step"],
    )  # fmt: skip

    # Every checkpoint, every step merged with nothing missing, the final eval.
    for s in CHECKPOINTS:
        assert (run / "checkpoints" / f"step_{s:06d}" / "COMPLETE").exists()
    for name in [f"step_{s:06d}" for s in CHECKPOINTS] + ["final"]:
        merged = json.loads((run / "eval" / f"{name}.json").read_text())
        assert sorted(merged["datasets"]) == ["digits", "faces", "textures"], merged
        assert merged["missing"] == {}, (name, merged["missing"])
    # The first checkpoint's parts: lost with orch-node-2, evaluated again on the head, once.
    for ledger in (run / "ledger").glob("*/*.json"):
        entry = json.loads(ledger.read_text())
        assert entry["status"] == "succeeded", entry
        step, dataset = entry["step"], entry["dataset"]
        folder = run / "logs" / "eval" / ("final" if step is None else f"step_{step:06d}")
        attempts = sorted(folder.glob(f"{dataset}.attempt*.log"))
        assert len(attempts) == entry["attempt"]
        # A grouped task's lines reach each of its parts' logs: this part's own result line.
        done_line = re.compile(rf"orch\.evaluate: {dataset} step \d+: .* on \d+ samples")
        finished = [a for a in attempts if done_line.search(a.read_text())]
        assert len(finished) == 1, (step, dataset, attempts)  # never evaluated twice
        if step == EVERY:
            assert entry["attempt"] == 2
            assert f"on Ray node {lost_id}" in attempts[0].read_text()
            assert f"on Ray node {head_id}" in attempts[1].read_text()

    # What the user sees.
    shown = orch(env | {"COLUMNS": "250"}, cwd, "status", "loss")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    logger.info("orch status:\n%s", shown.stdout)
    assert "finished, 1 restart(s)" in text
    assert "orch-node-1: ranks 0, 1" in text  # after the restart, both on the head
    ranks = ", ".join(map(str, lost_ranks))
    assert re.search(
        rf"worker group restarted at step \d+: node orch-node-2 lost \(ranks? {ranks}\); "
        rf"running again after \d+ s, from step {restart['step']}", text
    ), text  # fmt: skip
    assert re.search(rf"orch-node-2: 3 failed \[{EVERY}/digits \(attempt 1\)", text), text
    data = json.loads(orch(env, cwd, "status", "loss", "--json").stdout)
    cause = data["training"]["restart_causes"][0]
    assert cause["lost_nodes"] == ["orch-node-2"] and cause["step"] == restart["step"]
    succeeded = {a["node"] for a in data["eval_attempts"] if a["outcome"] == "succeeded"}
    assert succeeded == {"orch-node-1"}, data["eval_attempts"]


def test_without_room_after_a_node_loss_the_run_stops_within_node_wait_s_and_resumes(
    two_nodes: dict[str, Any], tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """training.node_wait_s bounds the wait for capacity: workers of 2 CPUs, one a node; node
    orch-node-2 lost after the first checkpoint, the head (2 CPUs) alone cannot hold both, so
    after node_wait_s the run stops non-zero with the reason; with the node back, `orch submit`
    of the same run continues it from its latest complete checkpoint to the end."""
    env = two_nodes["env"]
    cwd = demo_project(tmp_path, demo_data, tiny_model)
    args = [
        "submit", DEMO, "--address", ADDRESS, "--run-name", "wait",
        "--set", f"training.max_steps={STEPS}", "--set", f"training.checkpoint_every={EVERY}",
        "--set", "training.placement_strategy='SPREAD'", "--set", "training.max_failures=1",
        "--set", "training.cpus_per_worker=2", "--set", "training.node_wait_s=10",
        "--set", "evaluation.during_training=false",
    ]  # fmt: skip
    submitted = time.time()
    out = orch(env, cwd, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    run = cwd / "runs" / "wait"
    first = run / "checkpoints" / f"step_{EVERY:06d}" / "COMPLETE"
    wait_for("the first checkpoint", first.is_file, 300, run)
    assert not any(e["event"] == "finished" for e in events_of(run)), "trained too fast to lose"
    logger.info("first checkpoint %.1f s after submission", time.time() - submitted)
    kill = ray_sh(env, "kill-node", "2", timeout=30)
    assert kill.returncode == 0, kill.stderr
    killed = time.time()
    final = wait_state(env, cwd, "wait", {"SUCCEEDED", "FAILED", "STOPPED"}, 600, submitted)
    logger.info("node lost -> run stopped (no room): %.1f s", time.time() - killed)
    logs = orch(env, cwd, "logs", "wait")
    assert final["status"] == "FAILED", logs.stdout[-4000:]
    no_room = [e for e in events_of(run) if e["event"] == "no_room"]
    assert no_room, [e["event"] for e in events_of(run)]
    assert "training.node_wait_s = 10 s" in no_room[0]["reason"]
    assert "orch resume wait" in no_room[0]["reason"]

    back = ray_sh(env, "up", "--nodes", "2")
    assert back.returncode == 0, back.stdout + back.stderr
    again = time.time()
    logger.info("node back in %.1f s", again - killed)
    out = orch(env, cwd, *args)  # the same run, continued
    assert out.returncode == 0, out.stderr[-3000:]
    final = wait_state(env, cwd, "wait", {"SUCCEEDED", "FAILED", "STOPPED"}, 600, again)
    assert final["status"] == "SUCCEEDED", orch(env, cwd, "logs", "wait").stdout[-4000:]
    logger.info("resubmitted -> finished: %.1f s", time.time() - again)
    starts = [e for e in events_of(run) if e["event"] == "started"]
    assert starts[-1]["step"] >= EVERY and starts[-1]["resumed_from"]
    assert [e["step"] for e in events_of(run) if e["event"] == "finished"] == [STEPS]

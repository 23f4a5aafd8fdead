"""Eval parts as SLURM jobs, against a real one-node SLURM that these tests start and stop
(cluster/local/slurm.sh, Debian's slurm-wlm). Without root they skip, saying why."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.eval_backends.base import Cancelled, Failed, Succeeded
from orchestrator.eval_backends.local import LocalBackend
from orchestrator.eval_backends.slurm_jobs import SlurmBackend
from orchestrator.tracking import find_offline_runs, read_offline_run
from tests.helpers.cli import orch
from tests.helpers.evals import comparable, wait
from tests.helpers.jobs import demo_project, eval_part
from tests.helpers.paths import ROOT
from tests.helpers.runs import DemoRun

logger = logging.getLogger(__name__)
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
    job_id = b.submit(
        eval_part(checkpoint, demo_data, out, backend="slurm"), tmp_path / "faces.log"
    )
    assert wait(b, job_id) == Succeeded(out)
    state = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True
    )
    assert f"JobId={job_id} JobName=orch-eval-10" in state.stdout  # a real SLURM job
    local = LocalBackend()
    out_local = tmp_path / "local" / "faces.json"
    assert wait(
        local, local.submit(eval_part(checkpoint, demo_data, out_local), tmp_path / "l.log")
    ) == (Succeeded(out_local))
    assert comparable(out) == comparable(out_local)


def test_one_job_array_per_checkpoint(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    b = backend(tmp_path)
    parts = [
        (eval_part(checkpoint, demo_data, tmp_path / "a.json"), tmp_path / "a.log"),
        (eval_part(checkpoint, demo_data, tmp_path / "b.json", eval_ratio=1.0), tmp_path / "b.log"),
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


def test_grouped_parts_share_one_job_and_a_new_controller_adopts_them(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    """evaluation.group_parts: one SLURM job loads the checkpoint once for the checkpoint's
    parts; a part with bad data fails alone, with its own reason. The job outlives the backend
    that submitted it (a preempted controller detaches): a new one adopts its parts."""
    first = SlurmBackend(
        tmp_path / "slurm", cpus_per_task=1, mem_gb=2, timeout_min=10, group_parts=True
    )
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    parts = [
        (eval_part(checkpoint, demo_data, good), tmp_path / "good.log"),
        (
            eval_part(checkpoint, demo_data, bad, manifest=tmp_path / "nope.jsonl"),
            tmp_path / "bad.log",
        ),
    ]
    ids = first.submit_array(parts)
    slurm_id = ids[0].split(":")[0]
    assert ids == [f"{slurm_id}:0", f"{slurm_id}:1"] and "_" not in slurm_id  # one job, no array
    assert first.detach() == ids and first.running() == set()
    first.close()  # cancels nothing: it follows nothing any more
    assert squeue(slurm_id), "the detached job was cancelled"

    second = SlurmBackend(tmp_path / "slurm", cpus_per_task=1, mem_gb=2, timeout_min=10)
    assert all(second.adopt(part, i) for (part, _), i in zip(parts, ids, strict=True))
    assert not second.adopt(parts[0][0], "999999")  # a job SLURM never had: submit it again
    outcomes: dict[str, object] = {}
    deadline = time.time() + 120
    while len(outcomes) < len(ids) and time.time() < deadline:
        outcomes |= second.poll()
        time.sleep(0.1)
    assert outcomes[ids[0]] == Succeeded(good), outcomes
    failed = outcomes[ids[1]]
    assert isinstance(failed, Failed) and "manifest not found" in failed.reason, failed
    assert "part faces" in failed.reason and not bad.exists()
    stderr = (tmp_path / "slurm" / slurm_id / f"{slurm_id}_0_log.err").read_text()
    assert "one model load" in stderr and "for 2 parts" in stderr
    assert (tmp_path / "good.log").read_text().startswith(f"slurm job {slurm_id}\n")


def test_failure_and_cancel_are_typed_outcomes(
    slurm: None, tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    b = backend(tmp_path)
    bad = eval_part(checkpoint, demo_data, tmp_path / "x.json", manifest=tmp_path / "nope.jsonl")
    outcome = wait(b, b.submit(bad, tmp_path / "bad.log"))
    assert isinstance(outcome, Failed) and "manifest not found" in outcome.reason
    digits = {
        "kind": "classification", "train": str(demo_data / "digits" / "train.jsonl"),
        "eval": str(demo_data / "digits" / "test.jsonl"), "num_classes": 10,
    }  # fmt: skip
    slow = eval_part(
        checkpoint,
        demo_data,
        tmp_path / "slow.json",
        dataset="digits",
        dataset_spec=digits,
        eval_ratio=1.0,
        batch_size=8,
    )
    job_id = b.submit(slow, tmp_path / "slow.log")
    stderr = tmp_path / "slurm" / job_id / f"{job_id}_0_log.err"
    wait_for(lambda: stderr.is_file() and "eval part digits" in stderr.read_text(), 120, "start")
    cancelled_at = time.time()
    b.cancel(job_id)
    assert wait(b, job_id, timeout=60) == Cancelled()
    # The part really stops (submitit alone ignores SIGTERM, so it would keep running and hold
    # its allocation until SLURM's KillWait sends SIGKILL).
    kill_wait = int(slurm_config("KillWait").split()[0])
    wait_for(lambda: not squeue(job_id), kill_wait, "the cancelled part to leave the queue")
    logger.info("cancelled eval part left the queue in %.1f s", time.time() - cancelled_at)
    assert "eval part stopped by SIGTERM" in stderr.read_text()
    assert not (tmp_path / "slow.json").exists()


def slurm_config(name: str) -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise AssertionError(f"no {name} in scontrol show config")


def squeue(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id], capture_output=True, text=True, check=False
    ).stdout.strip()


# ---- the whole controller in a SLURM allocation: `orch submit --cluster slurm` ----------------

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def job_field(job_id: str, name: str) -> str:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    for word in out.split():
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    raise AssertionError(f"no {name} in {out}")


def accounted_state(job_id: str) -> str:
    """The job's state in the accounting database (sacct), as submitit reads it."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    states = dict(line.split("|", 1) for line in out.splitlines() if line)
    if job_id not in states:
        raise AssertionError(f"sacct has no record of job {job_id}: {out!r}")
    return states[job_id]


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)
    return time.time() - t0


def cluster_submit(job: Path, cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", str(job), "--cluster", "slurm",
         *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def shape(value: Any) -> Any:
    """The keys of a result file, recursively, with leaves reduced to their type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def leftover_ray(job_id: str) -> list[str]:
    marker = f"/tmp/orch-ray-{job_id}/"
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd:
            found.append(cmd[:120])
    return found


# ---- two nodes: `orch submit --cluster slurm --nodes 2` on a two-node local SLURM -------------


@pytest.fixture
def two_slurm_nodes(slurm: None) -> Iterator[list[str]]:
    """The module's SLURM as two nodes (two slurmd on this host, orch-node-1 and -2), back to
    the module's one node afterwards, even on failure."""
    try:
        subprocess.run([str(SLURM_SH), "up", "--nodes", "2"], check=True, timeout=300)
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        assert sorted(n for n in nodes if n) == ["orch-node-1 idle", "orch-node-2 idle"], nodes
        yield ["orch-node-1", "orch-node-2"]
    finally:
        subprocess.run([str(SLURM_SH), "up"], check=True, timeout=300)


def test_demo_job_on_two_slurm_nodes_survives_a_requeue(
    two_slurm_nodes: list[str],
    tmp_path: Path,
    demo_data: Path,
    tiny_model: Path,
    demo_run: DemoRun,
) -> None:
    """jobs/demo_mix.toml as a user submits it to two nodes (`--nodes 2`; no --mem, no
    --cpus-per-task): the controller and the Ray head on the first node, a Ray worker on the
    second, one training rank on each; eval parts in their own SLURM jobs, on whichever node
    SLURM picks; results shaped as a local run's; nothing of the job's Ray left afterwards.
    Midway, SLURM's time-limit signal (sent here with `scancel --signal=USR1 --batch`): training
    checkpoints, the job requeues itself, the new allocation (both nodes again) resumes from that
    checkpoint, every checkpoint is evaluated and merged exactly once, and wandb continues the
    same run."""
    cwd = demo_project(tmp_path, demo_data, tiny_model)
    t0 = time.time()
    job_id = cluster_submit(
        ROOT / "jobs" / "demo_mix.toml", cwd, "--run-name", "in-slurm", "--nodes", "2",
        "--set", "training.max_steps=80", "--set", "training.checkpoint_every=40",
    )  # fmt: skip
    # SLURM's default memory per CPU: the allocation exports SLURM_MEM_PER_CPU, which an eval
    # part (sized with --mem) must not inherit, or its srun refuses to start.
    assert job_field(job_id, "MinMemoryCPU") != "0", job_field(job_id, "MinMemoryCPU")
    run = cwd / "runs" / "in-slurm"
    log = run / "slurm" / f"{job_id}.log"
    started = wait_for(lambda: log.is_file() and "Ray head" in log.read_text(), 120, "Ray head")
    logger.info("submit-to-start (sbatch returned -> Ray head up): %.1f s", started)

    # Signal while the first checkpoint's eval job is queued or running, so that the requeued
    # controller has a part to adopt (unless that job finishes before training stops).
    wait_for(lambda: any((run / "ledger" / "step_000040").glob("*.json")), 300, "step 40's eval")
    signalled = time.time()
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    events_file = run / "logs" / "train_events.jsonl"

    def events() -> list[dict[str, Any]]:
        return [json.loads(x) for x in events_file.read_text().splitlines() if x.strip()]

    wait_for(lambda: any(e["event"] == "preempted" for e in events()), 120, "preempted")
    preempted_at = next(e["step"] for e in events() if e["event"] == "preempted")
    wait_for(lambda: len([e for e in events() if e["event"] == "started"]) == 2, 300, "restart")
    logger.info(
        "requeue-to-resume (USR1 -> training started again): %.1f s", time.time() - signalled
    )
    wait_for(lambda: job_field(job_id, "JobState") in TERMINAL, 600, "the job to end")
    text = log.read_text()
    assert job_field(job_id, "JobState") == "COMPLETED", text[-3000:]
    logger.info("demo job on 2 SLURM nodes: %.1f s from submission to completion", time.time() - t0)
    assert job_field(job_id, "NodeList") == "orch-node-[1-2]"
    assert int(job_field(job_id, "Restarts")) == 1
    assert "requeueing job" in text
    # The worker node's Ray stopped at once (no drain towards a head that is gone already).
    assert "Draining for up to" not in text, text[-3000:]
    assert not leftover_ray(job_id)

    # Each allocation: one rank on each node, after the second node's Ray joined the head.
    starts = [e for e in events() if e["event"] == "started"]
    for start in starts:
        workers = start["workers"]
        assert [w["rank"] for w in workers] == [0, 1]
        assert len({w["node_id"] for w in workers}) == 2  # two Ray nodes
        assert sorted(w["slurm_node"] for w in workers) == two_slurm_nodes  # one rank per node
    assert (run / "logs" / "controller.log").read_text().count("Ray cluster: 2 node(s)") == 2
    assert starts[1]["step"] == preempted_at  # from the preemption checkpoint, not from scratch
    steps = sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir())
    assert preempted_at in steps and {40, 80} <= set(steps)
    for step in steps:  # every checkpoint evaluated and merged, none lost to the requeue
        merged = json.loads((run / "eval" / f"step_{step:06d}.json").read_text())
        assert sorted(merged["datasets"]) == ["digits", "faces", "textures"]
        assert merged["missing"] == {}, (step, merged["missing"])
        for d in merged["datasets"]:
            part = json.loads((run / "eval" / f"step_{step:06d}" / f"{d}.json").read_text())
            assert part["backend"] == "slurm"  # an eval allocation, not the training one
    ledger = [json.loads(p.read_text()) for p in (run / "ledger").glob("*/*.json")]
    assert ledger and all(e["status"] == "succeeded" and e["backend"] == "slurm" for e in ledger)
    # Eval jobs running at the preemption were left running and adopted by the requeued
    # controller (still running, or finished by then): none was evaluated twice.
    assert all(e["attempt"] == 1 for e in ledger), ledger
    clog = (run / "logs" / "controller.log").read_text()
    left = sum(int(n) for n in re.findall(r"(\d+) eval part\(s\) left running", clog))
    adopted = len(re.findall(r"adopted (finished )?eval", clog))
    logger.info("eval parts left running at the preemption: %d, adopted: %d", left, adopted)
    assert adopted == left, clog[-3000:]
    for step in steps:  # group_parts: one SLURM job (one model load) per checkpoint
        jobs = {e["job_id"].split(":")[0] for e in ledger if e.get("step") == step}
        assert len(jobs) == 1, ledger
    # Accounting (slurmdbd) saw the training allocation and every eval job end well.
    eval_jobs = sorted({e["job_id"].split(":")[0] for e in ledger})
    assert accounted_state(job_id) == "COMPLETED"
    assert [accounted_state(j) for j in eval_jobs] == ["COMPLETED"] * len(eval_jobs), eval_jobs
    eval_nodes = {job_field(j, "NodeList") for j in eval_jobs}
    assert eval_nodes <= set(two_slurm_nodes), eval_nodes
    logger.info("eval jobs ran on %s", sorted(eval_nodes))
    # `orch status` names the node of every part's attempt, as SLURM placed its job.
    shown = orch("status", str(run), "--json", cwd=cwd)
    assert shown.returncode == 0, shown.stderr[-2000:]
    attempts = json.loads(shown.stdout)["eval_attempts"]
    assert len(attempts) == len(ledger) and {a["outcome"] for a in attempts} == {"succeeded"}
    assert {a["node"] for a in attempts} == eval_nodes, attempts
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["missing"] == {}, final["missing"]
    files = find_offline_runs(run / "wandb")
    runs = [read_offline_run(f) for f in files]
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id  # one wandb run, continued
    history = [row for r in runs for row in r.history]
    assert sorted(row["eval/step"] for row in history if "eval/step" in row) == steps
    rows = [json.loads(x) for x in (run / "logs" / "train_metrics.jsonl").read_text().split("\n")
            if x]  # fmt: skip
    logger.info("step time on 2 SLURM nodes: %s s", [round(r["step_time_s"], 3) for r in rows])

    # The same job run locally (the session's demo run) writes results of the same shape.
    lrun = demo_run.run
    assert shape(json.loads((lrun / "eval" / "step_000080.json").read_text())) == shape(
        json.loads((run / "eval" / "step_000080.json").read_text())
    )
    assert shape(json.loads((lrun / "eval" / "final.json").read_text())) == shape(final)

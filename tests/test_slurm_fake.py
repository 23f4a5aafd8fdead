"""The SLURM eval backend's submit / poll / cancel logic against a scripted fake SLURM
(tests/fakes/slurm: sbatch, squeue, scontrol, scancel, sacct on PATH, state in a directory).
Real submitit, real subprocesses, no daemons: seconds, no root. tests/test_slurm.py runs the
same backend against a real SLURM."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.contract.layout import RunDir
from orchestrator.core.ledger import Ledger, LedgerEntry, PartStatus
from orchestrator.eval_backends import slurm_jobs
from orchestrator.eval_backends.base import Cancelled, Failed, Outcome, Preempted, Succeeded
from orchestrator.eval_backends.slurm_jobs import SlurmBackend, job_variables, sbatch_environ
from orchestrator.launch.slurm_allocation import SbatchOptions, render_sbatch, submit_sbatch
from orchestrator.views.status import collect_status, render_status
from tests.fakes.slurm.fakeslurm import FakeSlurm
from tests.helpers.jobs import eval_part

# What a job submitted from a real allocation (sbatch --cpus-per-task=2, DefMemPerCPU) sees,
# as printed by `env` inside one on cluster/local/slurm.sh's SLURM, plus input variables a
# user's shell may hold.
ALLOCATION = {
    "SLURM_CLUSTER_NAME": "orch-local",
    "SLURM_CPUS_ON_NODE": "2",
    "SLURM_CPUS_PER_TASK": "2",
    "SLURM_JOBID": "21",
    "SLURM_JOB_ID": "21",
    "SLURM_JOB_CPUS_PER_NODE": "2",
    "SLURM_JOB_NAME": "orch-demo_mix",
    "SLURM_JOB_NODELIST": "vm",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_JOB_PARTITION": "debug",
    "SLURM_MEM_PER_CPU": "1024",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_SUBMIT_DIR": "/work/main",
    "SLURM_TASK_PID": "12485",
    "SLURM_WORKING_CLUSTER": "orch-local:vm:6817:9728:109",
    "SBATCH_MEM_PER_NODE": "6G",  # an input variable: it would override the part's --mem
    "SBATCH_TIMELIMIT": "10",
    "SRUN_CPUS_PER_TASK": "2",
    "SALLOC_PARTITION": "debug",
}
# Set on purpose and not about one job: kept.
KEPT = {
    "SLURM_CONF": "/etc/slurm/slurm.conf",
    "SBATCH_ACCOUNT": "vlm-team",
    "SBATCH_QOS": "normal",
    "SBATCH_PARTITION": "cpu",
}
OTHER = {"WANDB_API_KEY": "secret-wandb-key", "RAY_AUTH_TOKEN": "secret-ray-token"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    """The fake first on PATH; none of the test process's own SLURM variables (CI may run in
    an allocation) unless a test sets them."""
    fake = FakeSlurm(tmp_path / "fake-slurm")
    for name in job_variables(os.environ) + [n for n in KEPT if n in os.environ]:
        monkeypatch.delenv(name)
    for name, value in fake.environ(dict(os.environ)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(slurm_jobs, "RESULT_GRACE_S", 0.2)
    return fake


def parts(tmp_path: Path, *datasets: str, **kw: Any) -> list[tuple[Any, Path]]:
    """(eval part, log path) for each dataset of one checkpoint; nothing runs them."""
    ckpt, data = tmp_path / "ckpt", tmp_path / "data"
    return [
        (
            eval_part(ckpt, data, tmp_path / "eval" / f"{d}.json", dataset=d, **kw),
            tmp_path / f"{d}.log",
        )
        for d in datasets
    ]


def finish(
    backend: SlurmBackend, job_id: str, status: str = "success", payload: Any = None
) -> None:
    """Write what submitit's job writes at its end: the result pickle (and, on success, the
    part's result file)."""
    from submitit.core.utils import cloudpickle_dump

    sjob, part, _ = backend._jobs[job_id]
    if status == "success":
        Path(part.out).parent.mkdir(parents=True, exist_ok=True)
        Path(part.out).write_text("{}")
        payload = part.out
    sjob.paths.result_pickle.parent.mkdir(parents=True, exist_ok=True)
    cloudpickle_dump((status, payload), sjob.paths.result_pickle)


def poll_until(backend: SlurmBackend, job_id: str, tries: int = 50) -> Outcome:
    for _ in range(tries):
        done = backend.poll()
        if job_id in done:
            return done[job_id]
        time.sleep(0.05)
    raise AssertionError(f"{job_id} did not end")


def test_a_checkpoints_parts_go_in_one_job_array(fake: FakeSlurm, tmp_path: Path) -> None:
    b = SlurmBackend(tmp_path / "slurm", cpus_per_task=2, mem_gb=3, timeout_min=30)
    ids = b.submit_array(parts(tmp_path, "digits", "faces", "textures"))
    [sub] = fake.submissions()
    assert ids == [f"{sub['job_ids'][0][:-2]}_{i}" for i in range(3)] == sub["job_ids"]
    d = sub["directives"]
    assert d["array"] == "0-2%3" and d["job-name"] == "orch-eval-10"
    assert (d["cpus-per-task"], d["mem"], d["time"]) == ("2", "3GB", "30")
    assert "srun" in sub["script"] and "submitit.core._submit" in sub["script"]
    assert (tmp_path / "faces.log").read_text().startswith(f"slurm job {ids[1]}\n")
    assert b.running() == set(ids)
    # A final part alone: one plain job, no array.
    [final] = b.submit_array(parts(tmp_path, "faces", partial=False))
    assert "_" not in final and "array" not in fake.submissions()[1]["directives"]
    assert fake.job(final)["name"] == "orch-eval-final"


def test_a_part_is_done_when_its_result_file_exists(fake: FakeSlurm, tmp_path: Path) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    ok, bad, empty = b.submit_array(parts(tmp_path, "digits", "faces", "textures"))
    for j in (ok, bad, empty):
        fake.set_state(j, "RUNNING")
    finish(b, ok)  # while SLURM still lists the job: the result file decides
    assert b.poll() == {ok: Succeeded(tmp_path / "eval" / "digits.json")}
    assert b.poll() == {}
    finish(b, bad, "error", "Traceback (most recent call last):\nValueError: manifest not found")
    finish(b, empty, "success")
    Path(b._jobs[empty][1].out).unlink()  # said success, wrote nothing
    done = b.poll()
    assert done[bad] == Failed(f"slurm job {bad}: ValueError: manifest not found")
    assert isinstance(done[empty], Failed)
    assert b.running() == set()


def test_live_jobs_are_listed_by_one_squeue_call(fake: FakeSlurm, tmp_path: Path) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    ids = b.submit_array(parts(tmp_path, "digits", "faces"))
    ids += b.submit_array(parts(tmp_path, "digits", "faces", step=20))
    ids += b.submit_array(parts(tmp_path, "faces", partial=False))
    fake.set_state(ids[0], "RUNNING")  # the others stay PENDING
    before = len(fake.calls())
    assert b.poll() == {}
    calls = fake.calls()[before:]
    assert [c[0] for c in calls] == ["squeue"]  # one call; no scontrol for live jobs
    assert "-r" in calls[0]  # one line per element (else pending ones print as 2_[0-1])
    assert set(calls[0][calls[0].index("-j") + 1].split(",")) == set(ids)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("FAILED", Failed),
        ("TIMEOUT", Failed),
        ("OUT_OF_MEMORY", Failed),
        ("PREEMPTED", Preempted),
        ("NODE_FAIL", Preempted),
        ("CANCELLED", Cancelled),  # by an administrator or a user: not by orch
    ],
)
def test_a_job_that_left_the_queue_without_a_result_is_explained_by_scontrol(
    fake: FakeSlurm, tmp_path: Path, state: str, expected: type
) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    [j] = b.submit_array(parts(tmp_path, "faces"))
    sjob, _, _ = b._jobs[j]
    Path(sjob.paths.stderr).parent.mkdir(parents=True, exist_ok=True)
    Path(sjob.paths.stderr).write_text("loading\nslurmstepd: error: *** JOB CANCELLED ***\n")
    fake.set_state(j, state)
    assert b.poll() == {}  # within the grace for a result file: scontrol not asked yet
    assert fake.calls("scontrol") == []
    outcome = poll_until(b, j)
    assert type(outcome) is expected, outcome
    if isinstance(outcome, Failed | Preempted):
        assert f"slurm job {j}: {state}" in outcome.reason
    if isinstance(outcome, Failed):
        assert "JOB CANCELLED ***" in outcome.reason  # the tail of the part's stderr
    assert fake.calls("scontrol") == [["scontrol", "-o", "show", "job", j]]
    assert b.running() == set()


def test_a_result_that_appears_within_the_grace_is_a_success(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    [j] = b.submit_array(parts(tmp_path, "faces"))
    fake.set_state(j, "COMPLETED")
    assert b.poll() == {}
    finish(b, j)  # a shared filesystem made the job's result visible only now
    assert b.poll() == {j: Succeeded(tmp_path / "eval" / "faces.json")}
    assert fake.calls("scontrol") == []


def test_a_failing_squeue_fails_no_part(fake: FakeSlurm, tmp_path: Path) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    live, gone = b.submit_array(parts(tmp_path, "digits", "faces"))
    fake.set_state(live, "RUNNING")
    fake.forget(gone)  # past MinJobAge: neither squeue nor scontrol knows it
    fake.squeue_fails()
    assert b.poll() == {}
    time.sleep(0.25)
    done = b.poll()  # scontrol still sees `live` running: it is waited for, not failed
    assert list(done) == [gone]
    unknown = done[gone]
    assert isinstance(unknown, Failed) and "UNKNOWN" in unknown.reason
    fake.squeue_fails(False)
    finish(b, live)
    assert b.poll() == {live: Succeeded(tmp_path / "eval" / "digits.json")}


def test_cancel_calls_scancel(
    fake: FakeSlurm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    running, ended, other = b.submit_array(parts(tmp_path, "digits", "faces", "textures"))
    fake.set_state(running, "RUNNING")
    b.cancel(running)
    assert fake.calls("scancel") == [["scancel", running]]
    assert fake.job(running)["state"] == "CANCELLED"
    assert b.poll() == {running: Cancelled()}  # no grace for a part orch cancelled
    fake.set_state(ended, "FAILED")
    with caplog.at_level(logging.WARNING, logger=slurm_jobs.__name__):
        b.cancel(ended)  # it ended meanwhile: scancel fails, which is logged, not raised
    assert f"scancel {ended}" in caplog.text and "already completing" in caplog.text
    b.close()  # cancels whatever is left
    assert fake.calls("scancel")[-2:] == [["scancel", ended], ["scancel", other]]
    assert fake.job(other)["state"] == "CANCELLED"


def test_submitits_view_through_sacct_matches(fake: FakeSlurm, tmp_path: Path) -> None:
    b = SlurmBackend(tmp_path / "slurm")
    [j] = b.submit_array(parts(tmp_path, "faces"))
    fake.set_state(j, "OUT_OF_MEMORY")
    assert b._jobs[j][0].state == "OUT_OF_MEMORY"  # submitit asks sacct
    assert fake.calls("sacct")


# ---- the clean environment sbatch sees ---------------------------------------------------


def test_sbatch_of_eval_parts_sees_no_allocation_variables(
    fake: FakeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (ALLOCATION | KEPT | OTHER).items():
        monkeypatch.setenv(name, value)
    b = SlurmBackend(tmp_path / "slurm", extra={"qos": "eval"})
    b.submit_array(parts(tmp_path, "digits", "faces"))  # an array
    b.submit_array(parts(tmp_path, "faces", partial=False))  # a single job
    for sub in fake.submissions():
        env = sub["env"]
        assert not [n for n in ALLOCATION if n in env], sorted(n for n in ALLOCATION if n in env)
        assert {n: env.get(n) for n in ("SLURM_CONF", "SBATCH_ACCOUNT", "SBATCH_PARTITION")} == {
            n: KEPT[n] for n in ("SLURM_CONF", "SBATCH_ACCOUNT", "SBATCH_PARTITION")
        }
        assert "SBATCH_QOS" not in env  # the script sets --qos itself: the variable would win
        eff = sub["effective"]  # what sbatch makes of script and environment together
        assert (eff["qos"], eff["partition"], eff["mem"], eff["time"]) == (
            "eval",
            "cpu",
            "4GB",
            "60",
        )
        assert {n: env[n] for n in OTHER} == OTHER  # secrets still reach the job
    # This process keeps its environment, and only names reach sbatch's command line.
    assert os.environ["SLURM_MEM_PER_CPU"] == "1024"
    command = " ".join(b.executor._make_submission_command(Path("s.sh")))
    assert "-u SLURM_MEM_PER_CPU" in command and "1024" not in command and "secret" not in command


def test_eval_parts_get_the_users_home_and_tmpdir_back(
    fake: FakeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside orch's training allocation HOME and TMPDIR are per-job directories removed at its
    teardown (and present on its node only); an eval part it submits gets the user's own."""
    for name, value in ALLOCATION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", "/tmp/orch-41/home")
    monkeypatch.setenv("TMPDIR", "/tmp/orch-41")
    monkeypatch.setenv("ORCH_USER_HOME", str(tmp_path / "user"))
    monkeypatch.setenv("ORCH_USER_TMPDIR", "")  # the user had none
    b = SlurmBackend(tmp_path / "slurm")
    b.submit_array(parts(tmp_path, "digits", "faces"))
    b.submit_array(parts(tmp_path, "faces", partial=False))
    for sub in fake.submissions():
        assert sub["env"]["HOME"] == str(tmp_path / "user")
        assert "TMPDIR" not in sub["env"]
    monkeypatch.setenv("ORCH_USER_TMPDIR", "/scratch/u")
    b.submit_array(parts(tmp_path, "textures"))
    assert fake.submissions()[-1]["env"]["TMPDIR"] == "/scratch/u"


def test_an_eval_partition_overrides_the_users_default(
    fake: FakeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")  # the training job's partition
    b = SlurmBackend(tmp_path / "slurm", partition="cpu-eval")
    b.submit_array(parts(tmp_path, "faces"))
    [sub] = fake.submissions()
    assert "SBATCH_PARTITION" not in sub["env"] and sub["effective"]["partition"] == "cpu-eval"


def test_training_submission_sees_no_allocation_variables(
    fake: FakeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orch submit --cluster slurm` typed inside an salloc shell or a batch job."""
    for name, value in (ALLOCATION | KEPT | OTHER).items():
        monkeypatch.setenv(name, value)
    script = tmp_path / "train.sbatch"
    options = SbatchOptions(
        job_name="orch-x",
        run_dir=tmp_path / "runs" / "x",
        python="/venv/bin/python",
        workdir=tmp_path,
        account="vlm-team",
    )
    script.write_text(render_sbatch(options))
    job_id = submit_sbatch(script, tmp_path / "%j.log")
    [sub] = fake.submissions()
    assert sub["job_ids"] == [job_id]
    assert not [n for n in ALLOCATION if n in sub["env"]]
    assert sub["env"]["SLURM_CONF"] == KEPT["SLURM_CONF"]
    assert "SBATCH_ACCOUNT" not in sub["env"]  # the script's --account stands
    assert sub["env"]["SBATCH_PARTITION"] == "cpu"  # the user's default partition stands
    assert {n: sub["env"][n] for n in OTHER} == OTHER


def test_which_variables_are_dropped() -> None:
    environ = ALLOCATION | KEPT | OTHER | {"PATH": "/bin", "SLURMISH": "x"}
    assert set(job_variables(environ)) == set(ALLOCATION)
    assert set(job_variables(environ, ["partition", "gpus_per_task"])) == set(ALLOCATION) | {
        "SBATCH_PARTITION"
    }
    kept = sbatch_environ(environ, ["account"])
    assert set(kept) == set(KEPT) - {"SBATCH_ACCOUNT"} | set(OTHER) | {"PATH", "SLURMISH"}


# ---- what `orch status` says about the final eval of such a run -------------------------

SRUN_CLASH = (
    "FAILED; srun: fatal: SLURM_MEM_PER_CPU, SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are "
    "mutually exclusive."
)


def failed_run(tmp_path: Path, *, ended: str | None) -> RunDir:
    """The run directory `orch submit --cluster slurm` left before the fix: training finished,
    every eval part of both checkpoints failed (three attempts), nothing merged but "missing";
    ``ended``: the controller's last log line, or None while it still runs."""
    rundir = RunDir(tmp_path / "runs" / "demo")
    rundir.create("", {"name": "demo", "evaluation": {"final_full": True}})
    events = [{"event": "started", "step": 0, "time": 1.0}]
    ledger = Ledger(rundir)
    job = 3
    for step in (30, 60):
        (rundir.checkpoints / f"step_{step:06d}").mkdir()
        (rundir.checkpoints / f"step_{step:06d}" / "COMPLETE").write_text("")
        events.append({"event": "checkpoint", "step": step, "time": 2.0})
        for i, d in enumerate(("digits", "faces", "textures")):
            reason = f"slurm job {job}_{i}: {SRUN_CLASH}"
            entry = LedgerEntry(step, d, step, PartStatus.SUBMITTED, 3, "slurm", f"{job}_{i}", 3.0)
            ledger.put(entry.finished(PartStatus.FAILED, reason))
        job += 3
    events.append({"event": "finished", "step": 60, "time": 4.0})
    rundir.logs.joinpath("train_events.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in events)
    )
    lines = [
        "2026-12-01 20:26:04,677 INFO orchestrator.tracking.wandb_tracker: wandb run demo started",
        "2026-12-01 20:27:39,426 INFO orch.controller: step 60 merged: missing ['digits']",
    ]
    if ended is not None:
        lines += [
            f"2026-12-01 20:27:39,936 ERROR orch.controller: run demo finished {ended}",
            "2026-12-01 20:27:39,955 INFO orchestrator.tracking.wandb_tracker: wandb run finished",
            "2026-12-01 20:27:40,256 INFO orch.submit: run directory: /runs/demo",
        ]
    rundir.logs.joinpath("controller.log").write_text("".join(f"{x}\n" for x in lines))
    return rundir


def test_status_says_why_a_finished_run_has_no_final_eval(tmp_path: Path) -> None:
    rundir = failed_run(
        tmp_path, ended="(exit 1): no checkpoint was fully evaluated: no best model"
    )
    status = collect_status(rundir)
    assert status["final"] is None
    final = status["final_state"]
    assert final["state"] == "not run", final
    assert final["detail"].startswith("no checkpoint was fully evaluated (6 eval parts failed;")
    assert (
        "step 60/textures: slurm job 6_2: FAILED; srun: fatal: SLURM_MEM_PER_CPU"
        in (final["detail"])
    )
    render_status(status | {"ray_job": None})  # the table renders it (rich, to stdout)


def test_status_of_the_final_eval_while_the_controller_runs(tmp_path: Path) -> None:
    rundir = failed_run(tmp_path, ended=None)
    assert collect_status(rundir)["final_state"] == {
        "state": "pending",
        "detail": "after the eval parts of the checkpoints",
    }
    # Preempted (exit 3): SLURM requeues the job, whose controller appends to the same log.
    rundir2 = failed_run(tmp_path / "2", ended="(exit 3): preempted: checkpoint saved, requeue")
    assert collect_status(rundir2)["final_state"]["state"] == "pending"
    assert "preempted" in collect_status(rundir2)["final_state"]["detail"]
    with (rundir2.logs / "controller.log").open("a") as f:
        f.write("2026-12-01 20:29:00,000 INFO orch.controller: eval step 60/faces submitted\n")
    assert collect_status(rundir2)["final_state"] == {
        "state": "pending",
        "detail": "after the eval parts of the checkpoints",
    }
    # A later "finished" of that controller holds again.
    with (rundir2.logs / "controller.log").open("a") as f:
        f.write("2026-12-01 20:30:00,000 ERROR orch.controller: run demo finished (exit 1): x\n")
    assert collect_status(rundir2)["final_state"]["state"] == "not run"
    # Final parts submitted: running, with their states.
    ledger = Ledger(rundir)
    for i, d in enumerate(("digits", "faces")):
        ledger.put(LedgerEntry(None, d, 60, PartStatus.SUBMITTED, 1, "slurm", f"20_{i}", 5.0))
    assert collect_status(rundir)["final_state"] == {
        "state": "running",
        "detail": "step 60: 2 submitted",
    }


def test_status_of_a_done_or_unrequested_final_eval(tmp_path: Path) -> None:
    rundir = failed_run(tmp_path, ended="(exit 0): done")
    schema1 = {"overall": {"accuracy": 0.75, "correct": 300, "loss": 0.5, "n": 400}}
    rundir.final.write_text(json.dumps(schema1))
    assert collect_status(rundir)["final_state"] == {
        "state": "done",
        "detail": "accuracy 0.7500 on 400",
    }
    vqa = {"schema": 2, "overall": {"n": 200, "exact_match": 0.3, "stderr": {"exact_match": 0.03}}}
    rundir.final.write_text(json.dumps(vqa))  # schema 2, a kind without accuracy
    assert collect_status(rundir)["final_state"]["detail"] == "exact_match 0.3000 on 200"
    other = failed_run(tmp_path / "2", ended="(exit 1): eval parts failed for good: 30/digits")
    other.spec_json.write_text(json.dumps({"evaluation": {"final_full": False}}))
    assert collect_status(other)["final_state"]["state"] == "not requested"


def test_status_reads_the_controllers_durable_end_and_training_stopped(tmp_path: Path) -> None:
    """logs/controller_end.json (written by the controller at its end) is what status trusts;
    training that never finished under a controller that is gone is "stopped", not running."""
    from orchestrator.contract.atomic import atomic_write_json

    rundir = failed_run(tmp_path, ended=None)  # no "finished" line in the log at all
    atomic_write_json(rundir.controller_end, {"exit": 1, "reason": "training failed", "time": 1})
    events = [json.loads(x) for x in rundir.train_events.read_text().splitlines()]
    rundir.train_events.write_text(
        "".join(json.dumps(e) + "\n" for e in events if e["event"] != "finished")
    )
    status = collect_status(rundir)
    assert status["training"]["state"] == "stopped (exit 1: training failed)"
    assert status["final_state"] == {
        "state": "not run",
        "detail": "training did not finish (training failed)",
    }


def test_slurm_parts_ask_for_their_gpus(fake: FakeSlurm, tmp_path: Path) -> None:
    from orchestrator.contract.spec import validate_spec

    s = validate_spec({
        "name": "t", "runs_dir": str(tmp_path), "model": {"path": str(tmp_path / "m")},
        "datasets": {"a": {"train": "x", "eval": "x", "num_classes": 2}},
        "training": {"max_steps": 3}, "evaluation": {"backend": "slurm", "gpus_per_part": 0.5},
    })  # fmt: skip
    backend = SlurmBackend.from_spec(s, RunDir(tmp_path / "run"))
    assert backend.executor.parameters["additional_parameters"]["gpus_per_task"] == 1


def test_status_names_the_slurm_node_each_part_ran_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A SLURM part says where it runs in its job's stderr (what run_part and run_group log
    first); the part's log in the run directory points at that file, and `orch status` follows
    it: the node is the SLURM node's name, the attempt's outcome the ledger's."""
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-node-7")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with caplog.at_level(logging.INFO, logger=slurm_jobs.logger.name):
        slurm_jobs._log_node()
    stderr = tmp_path / "slurm" / "4242_0_log.err"
    stderr.parent.mkdir()
    stderr.write_text("".join(f"2026-12-03 10:00:00,000 {r.name}: {r.getMessage()}\n"
                              for r in caplog.records) + "eval part faces ...\n")  # fmt: skip
    rundir = RunDir(tmp_path / "run")
    rundir.create('name = "r"\n', {"name": "r"})
    log = rundir.eval_log(10, "faces", 1)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"slurm job 4242\n{tmp_path / 'slurm' / '4242_0_log.out'}\n{stderr}\n")
    Ledger(rundir).put(LedgerEntry(step=10, dataset="faces", eval_step=10,
                                   status=PartStatus.SUCCEEDED, attempt=1, backend="slurm",
                                   job_id="4242_0", submitted_at=time.time()))  # fmt: skip
    assert slurm_jobs.part_node(log.read_text()) == "gpu-node-7"
    (attempt,) = collect_status(rundir)["eval_attempts"]
    assert attempt == {"part": "10/faces", "attempt": 1, "node": "gpu-node-7",
                       "outcome": "succeeded"}  # fmt: skip
    stderr.unlink()  # not yet started, or its files are gone: no node, not an error
    assert slurm_jobs.part_node(log.read_text()) is None
    assert collect_status(rundir)["eval_attempts"] == []

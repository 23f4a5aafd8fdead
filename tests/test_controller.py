"""The controller stepped one iteration at a time against a scripted fake backend and a fake
training handle; the run directory is real (checkpoints are directories with COMPLETE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.layout import RunDir
from orchestrator.core.controller import (
    Controller,
    Finish,
    MergeFinal,
    MergeStep,
    Snapshot,
    SubmitPart,
    TrainingState,
    decide,
)
from orchestrator.core.ledger import Ledger, LedgerEntry, PartStatus
from orchestrator.tracking import MemoryTracker
from tests.helpers.fakes import FakeBackend, FakeTraining
from tests.helpers.jobs import make_spec
from tests.helpers.rundirs import add_checkpoint


def snapshot(**kw: object) -> Snapshot:
    base = dict(
        datasets=("a", "b"),
        checkpoints=(),
        ledger={},
        running=frozenset(),
        merged=frozenset(),
        final_merged=False,
        best_step=None,
        training=TrainingState.RUNNING,
        during_training=True,
        final_full=True,
        max_attempts=2,
    )
    return Snapshot(**(base | kw))  # type: ignore[arg-type]


def entry(
    step: int | None, d: str, status: PartStatus, attempt: int = 1, job: str = "j"
) -> LedgerEntry:
    return LedgerEntry(step, d, step or 10, status, attempt, "fake", job, 0.0)


def test_decide_submits_every_dataset_of_a_new_checkpoint() -> None:
    assert decide(snapshot(checkpoints=(10,))) == [
        SubmitPart(10, "a", 10, 1),
        SubmitPart(10, "b", 10, 1),
    ]


def test_decide_merges_when_all_parts_settled_and_retries_failures() -> None:
    led = {
        (10, "a"): entry(10, "a", PartStatus.SUCCEEDED),
        (10, "b"): entry(10, "b", PartStatus.FAILED),
    }
    assert decide(snapshot(checkpoints=(10,), ledger=led)) == [SubmitPart(10, "b", 10, 2)]
    led[(10, "b")] = entry(10, "b", PartStatus.FAILED, attempt=2)
    assert decide(snapshot(checkpoints=(10,), ledger=led)) == [MergeStep(10)]


def test_decide_waits_for_the_backoff_before_a_retry() -> None:
    failed = LedgerEntry(10, "a", 10, PartStatus.FAILED, 2, "fake", "j", 0.0, finished_at=100.0)
    led = {(10, "a"): failed, (10, "b"): entry(10, "b", PartStatus.SUCCEEDED)}
    s = dict(checkpoints=(10,), ledger=led, max_attempts=3, retry_backoff_s=5.0)
    assert decide(snapshot(**s, now=109.0)) == []  # attempt 2 failed: wait 5 * 2**1 = 10 s
    assert decide(snapshot(**s, now=110.0)) == [SubmitPart(10, "a", 10, 3)]


def test_decide_resubmits_parts_lost_with_a_previous_controller() -> None:
    led = {
        (10, "a"): entry(10, "a", PartStatus.SUBMITTED, job="old"),
        (10, "b"): entry(10, "b", PartStatus.SUBMITTED, job="live"),
    }
    assert decide(snapshot(checkpoints=(10,), ledger=led, running=frozenset({"live"}))) == [
        SubmitPart(10, "a", 10, 2)
    ]


def test_decide_final_eval_of_best_then_finish() -> None:
    done = {(10, d): entry(10, d, PartStatus.SUCCEEDED) for d in "ab"}
    s = snapshot(checkpoints=(10,), ledger=done, merged=frozenset({10}), best_step=10)
    assert decide(s) == []  # training still running: nothing to do
    s = snapshot(
        checkpoints=(10,),
        ledger=done,
        merged=frozenset({10}),
        best_step=10,
        training=TrainingState.SUCCEEDED,
    )
    assert decide(s) == [SubmitPart(None, "a", 10, 1), SubmitPart(None, "b", 10, 1)]
    led = done | {(None, d): entry(None, d, PartStatus.SUCCEEDED) for d in "ab"}
    s = snapshot(
        checkpoints=(10,),
        ledger=led,
        merged=frozenset({10}),
        best_step=10,
        training=TrainingState.SUCCEEDED,
    )
    assert decide(s) == [MergeFinal(10)]
    s = snapshot(
        checkpoints=(10,),
        ledger=led,
        merged=frozenset({10}),
        best_step=10,
        training=TrainingState.SUCCEEDED,
        final_merged=True,
    )
    assert decide(s) == [Finish(0, "done")]


def test_decide_failed_training_finishes_nonzero_after_pending_evals() -> None:
    s = snapshot(checkpoints=(10,), training=TrainingState.FAILED)
    assert decide(s) == [SubmitPart(10, "a", 10, 1), SubmitPart(10, "b", 10, 1)]
    s = snapshot(checkpoints=(10,), merged=frozenset({10}), training=TrainingState.FAILED)
    assert decide(s) == [Finish(1, "training failed")]


def test_decide_permanent_eval_failure_is_a_nonzero_finish() -> None:
    led = {
        (10, "a"): entry(10, "a", PartStatus.SUCCEEDED),
        (10, "b"): entry(10, "b", PartStatus.FAILED, attempt=2),
    }
    s = snapshot(
        checkpoints=(10,),
        ledger=led,
        merged=frozenset({10}),
        training=TrainingState.SUCCEEDED,
        final_full=False,
    )
    assert decide(s) == [Finish(1, "eval parts failed for good: 10/b")]


# ---------------------------------------------------------------- the shell, with fakes


@pytest.fixture
def run(tmp_path: Path) -> tuple[object, RunDir]:
    spec = make_spec(tmp_path)
    rundir = RunDir(tmp_path / "run")
    rundir.create("", {})
    return spec, rundir


def test_controller_evaluates_merges_picks_best_and_final(run: tuple[object, RunDir]) -> None:
    spec, rundir = run
    backend = FakeBackend(accuracy={10: 0.6, 20: 0.9, 30: 0.7})
    tracker = MemoryTracker()
    training = FakeTraining()
    c = Controller(spec, rundir, backend, tracker, training, poll_s=0)  # type: ignore[arg-type]
    c.iterate()
    assert backend.submitted == []  # no checkpoint yet
    (rundir.checkpoints / "step_000010").mkdir(parents=True)  # incomplete: no COMPLETE marker
    c.iterate()
    assert backend.submitted == []
    add_checkpoint(rundir, 20)
    add_checkpoint(rundir, 10)
    atomic_write_json(rundir.checkpoints / "step_000010" / ckpt.COMPLETE, {"step": 10})
    c.iterate()  # submit 4 parts
    assert sorted((j.step, j.dataset) for j in backend.submitted) == [
        (10, "a"),
        (10, "b"),
        (20, "a"),
        (20, "b"),
    ]
    c.iterate()  # outcomes -> merge both steps
    assert json.loads(rundir.merged(20).read_text())["overall"]["accuracy"] == pytest.approx(0.9)
    assert json.loads(rundir.best.read_text())["step"] == 20
    add_checkpoint(rundir, 30)
    training.state = TrainingState.SUCCEEDED
    c.iterate()  # step 30 parts
    c.iterate()  # merge 30
    c.iterate()  # final parts of the best step (20)
    finals = [j for j in backend.submitted if not j.partial]
    assert sorted(j.dataset for j in finals) == ["a", "b"] and {j.step for j in finals} == {20}
    assert all(j.eval_ratio == 1.0 for j in finals)
    c.iterate()  # merge final
    c.iterate()  # finish
    assert c.result == Finish(0, "done")
    final = json.loads(rundir.final.read_text())
    assert final["step"] == 20 and final["partial"] is False and final["overall"]["n"] == 400
    # Eval metrics on their own axis = the checkpoint's step, in the order they were merged.
    assert [s for s, _ in tracker.eval] == [10, 20, 30]
    assert tracker.final[0][0] == 20
    # Every part is recorded in the durable ledger, and inputs are kept.
    assert len(Ledger(rundir).entries) == 8
    assert rundir.part(10, "a").is_file()


def test_failed_part_is_retried_then_merged_as_missing(run: tuple[object, RunDir]) -> None:
    spec, rundir = run
    backend = FakeBackend(fail={(10, "b", 1), (10, "b", 2)})
    c = Controller(spec, rundir, backend, MemoryTracker(), FakeTraining(), poll_s=0)  # type: ignore[arg-type]
    add_checkpoint(rundir, 10)
    for _ in range(6):
        c.iterate()
    attempts = [j.attempt for j in backend.submitted if j.dataset == "b"]
    assert attempts == [1, 2]
    merged = json.loads(rundir.merged(10).read_text())
    assert merged["missing"] == {"b": "scripted failure"}
    assert merged["datasets"].keys() == {"a"}


@pytest.mark.parametrize("crash_after", [1, 2, 3, 4])
def test_a_new_controller_rebuilds_from_the_run_directory(
    run: tuple[object, RunDir], crash_after: int
) -> None:
    """Kill the controller after k iterations (its backend jobs die with it), start a new one
    on the same run directory: every checkpoint ends merged once, nothing is merged twice."""
    spec, rundir = run
    add_checkpoint(rundir, 10)
    add_checkpoint(rundir, 20)
    first = FakeBackend()
    tracker = MemoryTracker()
    c1 = Controller(spec, rundir, first, tracker, FakeTraining(TrainingState.SUCCEEDED), poll_s=0)  # type: ignore[arg-type]
    for _ in range(crash_after):
        c1.iterate()
    # A part that lands after the controller died (its process outlived it) is adopted.
    for job in first._pending.values():
        if job.dataset == "a":
            first.poll_one(job)
    done = {(j.step, j.dataset, j.partial) for j in first.submitted if Path(j.out).is_file()}
    second = FakeBackend()
    c2 = Controller(spec, rundir, second, tracker, FakeTraining(TrainingState.SUCCEEDED), poll_s=0)  # type: ignore[arg-type]
    for _ in range(10):
        if c2.result is None:
            c2.iterate()
    assert c2.result == Finish(0, "done")
    assert sorted(s for s, _ in tracker.eval) == [10, 20]  # each step published exactly once
    assert len(tracker.final) == 1
    # A third controller on the finished run publishes nothing again.
    c3 = Controller(
        spec, rundir, FakeBackend(), tracker, FakeTraining(TrainingState.SUCCEEDED), poll_s=0
    )  # type: ignore[arg-type]
    c3.iterate()
    assert c3.result == Finish(0, "done")
    assert len(tracker.eval) == 2 and len(tracker.final) == 1
    redone = {(j.step, j.dataset, j.partial) for j in second.submitted}
    assert not done & redone  # a part that finished before the crash is not evaluated again


def test_train_metrics_are_published_once_across_restarts(run: tuple[object, RunDir]) -> None:
    spec, rundir = run
    tracker = MemoryTracker()
    lines = [{"step": s, "loss": 1.0 / s, "time": 0.0} for s in (10, 20)]
    rundir.train_metrics.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 3')
    c1 = Controller(spec, rundir, FakeBackend(), tracker, FakeTraining(), poll_s=0)  # type: ignore[arg-type]
    c1.iterate()
    assert [s for s, _ in tracker.train] == [10, 20]  # the half-written line is not read
    with rundir.train_metrics.open("a") as f:  # the line completes; a restarted worker group
        f.write('0, "loss": 0.1}\n{"step": 20, "loss": 9.0}\n')  # reports step 20 again
    c2 = Controller(spec, rundir, FakeBackend(), tracker, FakeTraining(), poll_s=0)  # type: ignore[arg-type]
    c2.iterate()
    assert [s for s, _ in tracker.train] == [10, 20, 30]
    assert tracker.train[1][1]["loss"] == 0.05


def test_rows_the_tracker_lost_in_a_crash_are_logged_again(run: tuple[object, RunDir]) -> None:
    """wandb buffers its file: rows logged just before a SIGKILL can be lost although our
    record says they were published. The tracker's durable state wins."""
    from orchestrator.tracking.wandb_file import LoggedState

    spec, rundir = run
    add_checkpoint(rundir, 10)
    add_checkpoint(rundir, 20)
    first = MemoryTracker()
    c1 = Controller(
        spec, rundir, FakeBackend(), first, FakeTraining(TrainingState.SUCCEEDED), poll_s=0
    )  # type: ignore[arg-type]
    while c1.result is None:
        c1.iterate()
    assert sorted(s for s, _ in first.eval) == [10, 20] and len(first.final) == 1
    second = MemoryTracker()
    second.durable = LoggedState(train_step=0, eval_steps=frozenset({10}), final=False)  # type: ignore[attr-defined]
    c2 = Controller(
        spec, rundir, FakeBackend(), second, FakeTraining(TrainingState.SUCCEEDED), poll_s=0
    )  # type: ignore[arg-type]
    c2.iterate()
    assert [s for s, _ in second.eval] == [20]  # step 10 reached the tracker; 20 did not
    assert len(second.final) == 1
    assert c2.result == Finish(0, "done")

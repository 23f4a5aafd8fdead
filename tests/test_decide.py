"""The pure decisions: the retry policy's part decisions and the run's phases."""

from __future__ import annotations

import pytest

from orchestrator.core.decide import (
    Finish,
    PartDecision,
    Phase,
    RetryPolicy,
    Snapshot,
    SubmitPart,
    TrainingState,
    decide,
)
from orchestrator.core.ledger import LedgerEntry, PartStatus

LIVE = frozenset({"live"})


def entry(
    status: PartStatus, attempt: int = 1, job: str = "live", finished_at: float | None = None
) -> LedgerEntry:
    return LedgerEntry(10, "a", 10, status, attempt, "fake", job, 0.0, finished_at=finished_at)


@pytest.mark.parametrize(
    ("part", "now", "expected"),
    [
        (None, 0.0, PartDecision.SUBMIT_FIRST),
        (entry(PartStatus.SUBMITTED), 0.0, PartDecision.WAITING),
        (entry(PartStatus.SUBMITTED, job="gone"), 0.0, PartDecision.RESUBMIT_LOST),
        (entry(PartStatus.SUCCEEDED), 0.0, PartDecision.DONE),
        # attempt 1 failed at t=100: retry 2 waits 4 * 2**0 = 4 s
        (entry(PartStatus.FAILED, 1, finished_at=100.0), 103.9, PartDecision.WAIT_BACKOFF),
        (entry(PartStatus.FAILED, 1, finished_at=100.0), 104.0, PartDecision.RETRY_NOW),
        # attempt 2 failed at t=100: retry 3 waits 4 * 2**1 = 8 s
        (entry(PartStatus.FAILED, 2, finished_at=100.0), 107.9, PartDecision.WAIT_BACKOFF),
        (entry(PartStatus.FAILED, 2, finished_at=100.0), 108.0, PartDecision.RETRY_NOW),
        # attempt 3 of 3 failed: no waiting, it failed for good
        (entry(PartStatus.FAILED, 3, finished_at=100.0), 0.0, PartDecision.GAVE_UP),
        (entry(PartStatus.FAILED, 3, finished_at=100.0), 1e9, PartDecision.GAVE_UP),
    ],
)
def test_retry_policy_decisions(
    part: LedgerEntry | None, now: float, expected: PartDecision
) -> None:
    assert RetryPolicy(max_attempts=3, backoff_s=4.0).make_decision(part, LIVE, now) is expected


def test_retry_policy_without_backoff_retries_at_once() -> None:
    failed = entry(PartStatus.FAILED, 1, finished_at=None)
    assert RetryPolicy(max_attempts=2).make_decision(failed, LIVE, 0.0) is PartDecision.RETRY_NOW
    assert RetryPolicy(max_attempts=1).make_decision(failed, LIVE, 0.0) is PartDecision.GAVE_UP


def test_part_decision_kinds() -> None:
    submits = {d for d in PartDecision if d.submits}
    settled = {d for d in PartDecision if d.settled}
    assert submits == {
        PartDecision.SUBMIT_FIRST,
        PartDecision.RESUBMIT_LOST,
        PartDecision.RETRY_NOW,
    }
    assert settled == {PartDecision.DONE, PartDecision.GAVE_UP}
    assert not submits & settled


def snapshot(**kw: object) -> Snapshot:
    base: dict[str, object] = dict(
        datasets=("a",),
        checkpoints=(10,),
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


@pytest.mark.parametrize(
    ("kw", "phase"),
    [
        ({}, Phase.TRAINING),
        ({"merged": frozenset({10})}, Phase.TRAINING),
        ({"training": TrainingState.PREEMPTED}, Phase.PREEMPTED),
        ({"training": TrainingState.SUCCEEDED}, Phase.EVALUATING_CHECKPOINTS),
        ({"training": TrainingState.FAILED}, Phase.EVALUATING_CHECKPOINTS),
        ({"training": TrainingState.SUCCEEDED, "merged": frozenset({10})}, Phase.FINAL_EVAL),
        ({"training": TrainingState.SUCCEEDED, "during_training": False}, Phase.FINAL_EVAL),
        (
            {"training": TrainingState.SUCCEEDED, "merged": frozenset({10}), "final_merged": True},
            Phase.FINISHED,
        ),
        (
            {"training": TrainingState.SUCCEEDED, "merged": frozenset({10}), "final_full": False},
            Phase.FINISHED,
        ),
        ({"training": TrainingState.FAILED, "merged": frozenset({10})}, Phase.FINISHED),
    ],
)
def test_phase(kw: dict[str, object], phase: Phase) -> None:
    assert snapshot(**kw).phase is phase


def test_preempted_run_leaves_without_submitting() -> None:
    s = snapshot(training=TrainingState.PREEMPTED)
    assert decide(s) == [Finish(3, "preempted: checkpoint saved, requeue to resume")]


def test_final_eval_of_the_last_checkpoint_without_evals_during_training() -> None:
    s = snapshot(checkpoints=(10, 20), training=TrainingState.SUCCEEDED, during_training=False)
    assert decide(s) == [SubmitPart(None, "a", 20, 1)]


def test_final_eval_without_a_best_checkpoint_fails() -> None:
    s = snapshot(checkpoints=(), training=TrainingState.SUCCEEDED)
    assert s.phase is Phase.FINAL_EVAL
    assert decide(s) == [Finish(1, "no checkpoint was fully evaluated: no best model")]

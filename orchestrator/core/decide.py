"""The controller's decisions, as pure functions over values: snapshot -> actions.

``decide`` reads one ``Snapshot`` (what the controller observed) and returns the actions that
move the run forward; it does no IO. Two named decisions make it readable: the run's ``Phase``
(what the run is waiting for) and, per eval part, the ``RetryPolicy``'s ``PartDecision`` (submit,
wait, retry, done, given up), the way Ray Train's ``FailurePolicy.make_decision`` returns a
``FailureDecision`` that the controller carries out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from orchestrator.contract.exitcodes import ExitCode
from orchestrator.core.ledger import Key, LedgerEntry, PartStatus

PREEMPTED_EXIT = int(ExitCode.PREEMPTED)  # the sbatch script requeues on it


class TrainingState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"  # checkpointed and stopped on request; a requeue resumes it


class Phase(StrEnum):
    """Where a run is; every controller iteration is in exactly one."""

    TRAINING = "training"
    """Training runs; each new checkpoint is evaluated on the eval_ratio subsets."""
    PREEMPTED = "preempted"
    """Training checkpointed and stopped on request: leave now, a requeue resumes the run."""
    EVALUATING_CHECKPOINTS = "evaluating_checkpoints"
    """Training is over; the evals of its checkpoints are still running or being retried."""
    FINAL_EVAL = "final_eval"
    """The best (or last) checkpoint on the full eval sets."""
    FINISHED = "finished"
    """Nothing left to run: the run ends (successfully, or not)."""


# ----------------------------------------------------------------------------- retries


class PartDecision(StrEnum):
    """What one eval part needs next, given its ledger entry."""

    SUBMIT_FIRST = "submit_first"  # never submitted
    RESUBMIT_LOST = "resubmit_lost"  # submitted by a previous controller, no longer running
    WAITING = "waiting"  # submitted and running
    RETRY_NOW = "retry_now"  # failed, attempts left, backoff over
    WAIT_BACKOFF = "wait_backoff"  # failed, attempts left, backoff not over yet
    DONE = "done"  # succeeded
    GAVE_UP = "gave_up"  # failed, no attempts left: failed for good

    @property
    def submits(self) -> bool:
        return self in (
            PartDecision.SUBMIT_FIRST,
            PartDecision.RESUBMIT_LOST,
            PartDecision.RETRY_NOW,
        )

    @property
    def settled(self) -> bool:
        """The part will not run again: its step can be merged."""
        return self in (PartDecision.DONE, PartDecision.GAVE_UP)


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` attempts per part; retry k waits ``backoff_s * 2**(k-1)`` s
    after the failure of attempt k."""

    max_attempts: int
    backoff_s: float = 0.0

    def ready_at(self, failed: LedgerEntry) -> float:
        """When the part whose attempt ``failed`` failed may run again."""
        return (failed.finished_at or 0.0) + self.backoff_s * 2 ** (failed.attempt - 1)

    def make_decision(
        self, entry: LedgerEntry | None, running: frozenset[str], now: float
    ) -> PartDecision:
        if entry is None:
            return PartDecision.SUBMIT_FIRST
        if entry.status is PartStatus.SUBMITTED:
            if entry.job_id in running:
                return PartDecision.WAITING
            return PartDecision.RESUBMIT_LOST  # lost with a previous controller: run it again
        if entry.status is PartStatus.FAILED:
            if entry.attempt >= self.max_attempts:
                return PartDecision.GAVE_UP
            return (
                PartDecision.RETRY_NOW if now >= self.ready_at(entry) else PartDecision.WAIT_BACKOFF
            )
        return PartDecision.DONE


def next_attempt(entry: LedgerEntry | None) -> int:
    return 1 if entry is None else entry.attempt + 1


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SubmitPart:
    step: int | None  # None: final full eval
    dataset: str
    eval_step: int  # the checkpoint evaluated
    attempt: int


@dataclass(frozen=True)
class MergeStep:
    step: int


@dataclass(frozen=True)
class MergeFinal:
    eval_step: int


@dataclass(frozen=True)
class Finish:
    exit_code: int
    reason: str


Action = SubmitPart | MergeStep | MergeFinal | Finish


# ----------------------------------------------------------------------------- decide


@dataclass(frozen=True)
class Snapshot:
    """What the controller knows at one moment; ``decide`` needs nothing else."""

    datasets: tuple[str, ...]
    checkpoints: tuple[int, ...]
    ledger: Mapping[Key, LedgerEntry]
    running: frozenset[str]
    merged: frozenset[int]
    final_merged: bool
    best_step: int | None
    training: TrainingState
    during_training: bool
    final_full: bool
    max_attempts: int
    retry_backoff_s: float = 0.0
    now: float = 0.0

    @cached_property  # once per snapshot, not once per part
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_backoff_s)

    @property
    def checkpoint_evals_done(self) -> bool:
        return not self.during_training or all(step in self.merged for step in self.checkpoints)

    @property
    def phase(self) -> Phase:
        if self.training is TrainingState.PREEMPTED:
            return Phase.PREEMPTED
        if self.training is TrainingState.RUNNING:
            return Phase.TRAINING
        if not self.checkpoint_evals_done:
            return Phase.EVALUATING_CHECKPOINTS
        if self.training is TrainingState.SUCCEEDED and self.final_full and not self.final_merged:
            return Phase.FINAL_EVAL
        return Phase.FINISHED


def decide(s: Snapshot) -> list[Action]:
    """Pure: the actions that move the run forward from snapshot ``s``."""
    # Checkpoints are evaluated in every phase until all are merged (also after training
    # ended or was preempted: a merge needs nothing more to run).
    actions = _checkpoint_evals(s) if s.during_training else []
    match s.phase:
        case Phase.TRAINING | Phase.EVALUATING_CHECKPOINTS:
            return actions
        case Phase.PREEMPTED:
            # Leave now: parts not finished are in the ledger and run again after the requeue.
            kept = [a for a in actions if not isinstance(a, SubmitPart)]
            return [*kept, Finish(PREEMPTED_EXIT, "preempted: checkpoint saved, requeue to resume")]
        case Phase.FINAL_EVAL:
            return [*actions, *_final_eval(s)]
        case Phase.FINISHED:
            return [*actions, _finish(s)]


def _settle(s: Snapshot, key: Key, eval_step: int, actions: list[Action]) -> bool:
    """Queue what part ``key`` needs; True once it succeeded or failed for good."""
    entry = s.ledger.get(key)
    decision = s.retry.make_decision(entry, s.running, s.now)
    if decision.submits:
        actions.append(SubmitPart(key[0], key[1], eval_step, next_attempt(entry)))
    return decision.settled


def _checkpoint_evals(s: Snapshot) -> list[Action]:
    actions: list[Action] = []
    for step in s.checkpoints:
        if step in s.merged:
            continue
        if all([_settle(s, (step, d), step, actions) for d in s.datasets]):
            actions.append(MergeStep(step))
    return actions


def _final_eval(s: Snapshot) -> list[Action]:
    target = s.best_step if s.during_training else max(s.checkpoints, default=None)
    if target is None:
        return [Finish(ExitCode.FAILED, "no checkpoint was fully evaluated: no best model")]
    actions: list[Action] = []
    if all([_settle(s, (None, d), target, actions) for d in s.datasets]):
        actions.append(MergeFinal(target))
    return actions


def _finish(s: Snapshot) -> Finish:
    if s.training is TrainingState.FAILED:
        return Finish(ExitCode.FAILED, "training failed")
    failed = sorted(
        f"{'final' if e.step is None else e.step}/{e.dataset}"
        for e in s.ledger.values()
        if e.status is PartStatus.FAILED
    )
    if failed:
        return Finish(ExitCode.FAILED, f"eval parts failed for good: {', '.join(failed)}")
    return Finish(ExitCode.OK, "done")

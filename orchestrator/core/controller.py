"""The controller: an explicit state machine over the run directory.

Each iteration observes (new complete checkpoints, backend outcomes, the training status, new
train metrics), decides with a pure function (``decide`` in orchestrator/core/decide.py:
snapshot -> actions), and acts (submit, merge, publish). Everything it knows is in the run
directory (checkpoints, ledger, result files), so a new controller on the same run rebuilds its
state and carries on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalPart, eval_part
from orchestrator.contract.layout import RunDir, read_json_or_none
from orchestrator.contract.records import MergedStep
from orchestrator.contract.spec import JobSpec
from orchestrator.core.decide import (
    PREEMPTED_EXIT,
    Action,
    Finish,
    MergeFinal,
    MergeStep,
    Phase,
    Snapshot,
    SubmitPart,
    TrainingState,
    decide,
)
from orchestrator.core.ledger import Ledger, LedgerEntry, PartStatus
from orchestrator.core.lmms_import import fold_into, pending_imports
from orchestrator.core.merge import Best, choose_best, flat_metrics, merge_parts
from orchestrator.core.retention import apply_retention, plan_retention
from orchestrator.eval_backends.base import (
    AdoptingBackend,
    ArrayBackend,
    EvalBackend,
    Outcome,
    Succeeded,
)
from orchestrator.tracking import DurableTracker, Tracker

# The decision types are part of the controller's interface (tests, benchmarks, the training
# handle import them from here); they live in decide.py, which does no IO.
__all__ = [
    "PREEMPTED_EXIT",
    "Action",
    "Controller",
    "Finish",
    "FinishedTraining",
    "MergeFinal",
    "MergeStep",
    "Phase",
    "Snapshot",
    "SubmitPart",
    "TrainingHandle",
    "TrainingState",
    "TrainingStatus",
    "build_eval_job",
    "decide",
]

logger = logging.getLogger("orch.controller")


@dataclass(frozen=True)
class TrainingStatus:
    state: TrainingState
    error: str | None = None


class TrainingHandle(Protocol):
    def status(self) -> TrainingStatus: ...


class FinishedTraining:
    """The handle of a run whose training is over (publishing, benchmarks)."""

    def status(self) -> TrainingStatus:
        return TrainingStatus(TrainingState.SUCCEEDED)


# ----------------------------------------------------------------------------- the shell


def build_eval_job(
    spec: JobSpec,
    rundir: RunDir,
    step: int,
    dataset: str,
    *,
    full: bool,
    out: Path,
    backend: str,
    attempt: int = 1,
) -> EvalPart:
    """The eval part for one (checkpoint, dataset): eval_ratio of the set, or all of it."""
    target = ckpt.checkpoint_dir(rundir.checkpoints, step)
    return eval_part(
        spec,
        dataset,
        step=step,
        checkpoint=str(target / ckpt.HF_DIR),
        full=full,
        out=str(out),
        backend=backend,
        attempt=attempt,
        checkpoint_digest=ckpt.recorded_digest(target),
    )


@dataclass
class Published:
    """What has reached the tracker, kept in the run directory so that a restarted controller
    neither logs anything twice nor skips anything."""

    train_step: int = 0
    train_offset: int = 0
    eval_steps: dict[int, float] = field(default_factory=dict)  # step -> when published
    final: bool = False
    imports: set[str] = field(default_factory=set)  # imported parts folded and published

    @classmethod
    def load(cls, rundir: RunDir) -> Published:
        value = read_json_or_none(rundir.published)
        if value is None:
            return cls()
        return cls(
            train_step=int(value["train_step"]),
            train_offset=int(value["train_offset"]),
            eval_steps={int(s): float(t) for s, t in value["eval_steps"].items()},
            final=bool(value["final"]),
            imports=set(value.get("imports", [])),
        )

    def save(self, rundir: RunDir) -> None:
        atomic_write_json(
            rundir.published,
            {
                "train_step": self.train_step,
                "train_offset": self.train_offset,
                "eval_steps": {str(s): t for s, t in sorted(self.eval_steps.items())},
                "final": self.final,
                "imports": sorted(self.imports),
            },
        )


class Controller:
    def __init__(
        self,
        spec: JobSpec,
        rundir: RunDir,
        backend: EvalBackend,
        tracker: Tracker,
        training: TrainingHandle,
        *,
        poll_s: float = 0.5,
    ) -> None:
        self.spec = spec
        self.rundir = rundir
        self.backend = backend
        self.tracker = tracker
        self.training = training
        self.poll_s = poll_s
        self.ledger = Ledger(rundir)
        self._adopt_finished_parts()
        self._adopt_running_parts()
        for finished in ckpt.finish_removals(self.rundir.checkpoints):
            logger.warning("retention: finished removing %s (interrupted by a crash)", finished)
        self.merged: dict[int, dict[str, Any]] = self._load_merged()
        self.published = Published.load(rundir)
        self._reconcile_with_tracker()
        self._dirty = False
        self.result: Finish | None = None  # set by the Finish action: the run is over
        self.phase: Phase | None = None  # of the last iteration (logged when it changes)
        self._publish_unpublished()
        self.flush()

    def _adopt_finished_parts(self) -> None:
        """A part whose result landed after its controller died is done: never evaluate twice."""
        for e in list(self.ledger.entries.values()):
            if e.status is PartStatus.SUBMITTED:
                value = read_json_or_none(self.rundir.part(e.step, e.dataset))
                if value is not None and value.get("step") == e.eval_step:
                    self.ledger.put(e.finished(PartStatus.SUCCEEDED))
                    logger.info("adopted finished eval part %s/%s", e.step or "final", e.dataset)

    def _adopt_running_parts(self) -> None:
        """Parts a previous controller left running on a backend they outlive (SLURM jobs) are
        followed, not evaluated a second time beside themselves."""
        if not isinstance(self.backend, AdoptingBackend):
            return
        for e in list(self.ledger.entries.values()):
            if e.status is not PartStatus.SUBMITTED or e.backend != self.backend.name:
                continue
            a = SubmitPart(e.step, e.dataset, e.eval_step, e.attempt)
            if self.backend.adopt(self._job(a), e.job_id):
                what = "final" if e.step is None else f"step {e.step}"
                logger.info("adopted eval %s/%s (%s, attempt %d)", what, e.dataset, e.job_id,
                            e.attempt)  # fmt: skip

    def _reconcile_with_tracker(self) -> None:
        """Trust what the tracker durably holds over our record of what we sent it: rows
        logged just before a crash can be lost in the tracker's buffers; they are re-logged."""
        if not isinstance(self.tracker, DurableTracker) or self.tracker.durable is None:
            return
        durable = self.tracker.durable
        pub = self.published
        lost = sorted(set(pub.eval_steps) - durable.eval_steps)
        if lost or durable.train_step < pub.train_step or (pub.final and not durable.final):
            logger.warning(
                "the tracker lost rows logged before the last crash (eval steps %s, train steps "
                "after %d%s); publishing them again",
                lost,
                durable.train_step,
                ", final" if pub.final and not durable.final else "",
            )
        for step in lost:
            del pub.eval_steps[step]
        if durable.train_step < pub.train_step:
            pub.train_step, pub.train_offset = durable.train_step, 0
        pub.final = pub.final and durable.final

    def _publish_unpublished(self) -> None:
        """Results merged by a controller that died before publishing them are published now."""
        for step in sorted(set(self.merged) - set(self.published.eval_steps)):
            self._publish_step(step)
        final = read_json_or_none(self.rundir.final)
        if final is not None and not self.published.final:
            self._publish_final(final)

    def _load_merged(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(self.rundir.eval_dir.glob("step_*.json")):
            step = ckpt.step_of(path.with_suffix(""))
            value = read_json_or_none(path)
            if step is not None and value is not None:
                out[step] = value
        return out

    # -- the loop
    def run(self) -> int:
        while self.result is None:
            self.iterate()
            if self.result is None:
                time.sleep(self.poll_s)
        return self.result.exit_code

    def iterate(self) -> None:
        """One observe-decide-act iteration."""
        self._publish_train_metrics()
        for job_id, outcome in self.backend.poll().items():
            self._record(job_id, outcome)
        training = self.training.status()
        snap = self._snapshot(training.state)
        if snap.phase is not self.phase:
            logger.info("run %s: phase %s", self.rundir.name, snap.phase)
            self.phase = snap.phase
        actions = decide(snap)
        # The parts of one checkpoint go to the backend together (one SLURM job array).
        groups: dict[int | None, list[SubmitPart]] = {}
        for action in actions:
            if isinstance(action, SubmitPart):
                groups.setdefault(action.step, []).append(action)
        for group in groups.values():
            self._submit(group)
        for action in actions:
            if not isinstance(action, SubmitPart):
                self._act(action, training)
        if self.spec.training.retention and self.result is None:
            self._retain(snap)
        self.fold_imports()
        self.flush()

    def _retain(self, snap: Snapshot) -> None:
        """Checkpoint retention (training.keep_last / keep_weights): never the best one's
        weights, nor those of a step whose evals have not ended, nor the resume point."""
        tr = self.spec.training
        complete = {s: ckpt.checkpoint_dir(self.rundir.checkpoints, s) for s in snap.checkpoints}
        protected = {s for s in complete if snap.during_training and s not in self.merged}
        best = self._best()
        if best is not None:
            protected.add(best.step)
        elif not self.rundir.final.is_file() and complete:
            protected.add(max(complete))  # no evals during training: the final eval's step
        plan = plan_retention(
            list(complete),
            {s for s, d in complete.items() if ckpt.resumable(d)},
            keep_last=tr.keep_last,
            keep_weights=tr.keep_weights,
            protected=protected,
        )
        if plan:
            why = f"training.keep_last = {tr.keep_last}, keep_weights = {tr.keep_weights}"
            apply_retention(self.rundir, plan, why)

    def _snapshot(self, training: TrainingState) -> Snapshot:
        best = self._best()
        return Snapshot(
            datasets=self.spec.part_names,
            checkpoints=tuple(self.rundir.complete_checkpoints()),
            ledger=dict(self.ledger.entries),
            running=frozenset(self.backend.running()),
            merged=frozenset(self.merged),
            final_merged=self.rundir.final.is_file(),
            best_step=best.step if best else None,
            training=training,
            during_training=self.spec.evaluation.during_training,
            final_full=self.spec.evaluation.final_full,
            max_attempts=self.spec.evaluation.max_attempts,
            retry_backoff_s=self.spec.evaluation.retry_backoff_s,
            now=time.time(),
        )

    # -- actions
    def _act(self, action: Action, training: TrainingStatus) -> None:
        match action:
            case MergeStep(step):
                self._merge_step(step)
            case MergeFinal(eval_step):
                self._merge_final(eval_step)
            case Finish(code, reason):
                self._publish_train_metrics()
                if code == 0:
                    self._export_best()
                if training.error:
                    logger.error("training failed: %s", training.error)
                    if training.state is TrainingState.FAILED:
                        # Why, in the end record `orch status` shows (the first line).
                        reason = f"{reason}: {training.error.splitlines()[0][:500]}"
                log = logger.info if code == 0 else logger.error
                log("run %s finished (exit %d): %s", self.rundir.name, code, reason)
                # The end, durably: `orch status` says what happened without parsing logs.
                atomic_write_json(
                    self.rundir.controller_end,
                    {"exit": int(code), "reason": reason, "time": time.time()},
                )
                self.result = action

    def _export_best(self) -> None:
        """runs/R/export/best: the best checkpoint (the last one when checkpoints were not
        evaluated during training) as a self-contained HF directory."""
        from orchestrator.core.export import export_checkpoint

        if self.rundir.best.is_file():
            best = json.loads(self.rundir.best.read_text())
            step, info = int(best["step"]), {"metric": self.spec.best.metric, "best": best}
        else:
            complete = ckpt.complete_checkpoints(self.rundir.checkpoints)
            if not complete:
                return
            step, info = max(complete), {"chosen": "last checkpoint (no evals during training)"}
        export_checkpoint(self.rundir.checkpoints, step, self.rundir.export_best, info)

    def _submit(self, group: list[SubmitPart]) -> None:
        parts = [(self._job(a), self.rundir.eval_log(a.step, a.dataset, a.attempt)) for a in group]
        if isinstance(self.backend, ArrayBackend) and len(parts) > 1:
            job_ids = self.backend.submit_array(parts)
        else:
            job_ids = [self.backend.submit(job, log) for job, log in parts]
        for a, job_id in zip(group, job_ids, strict=True):
            self.ledger.put(
                LedgerEntry(
                    step=a.step,
                    dataset=a.dataset,
                    eval_step=a.eval_step,
                    status=PartStatus.SUBMITTED,
                    attempt=a.attempt,
                    backend=self.backend.name,
                    job_id=job_id,
                    submitted_at=time.time(),
                )
            )
            what = "final" if a.step is None else f"step {a.step}"
            logger.info("eval %s/%s submitted (attempt %d, %s)", what, a.dataset, a.attempt, job_id)

    def _job(self, a: SubmitPart) -> EvalPart:
        return build_eval_job(
            self.spec,
            self.rundir,
            a.eval_step,
            a.dataset,
            full=a.step is None,
            out=self.rundir.part(a.step, a.dataset),
            backend=self.backend.name,
            attempt=a.attempt,
        )

    def _record(self, job_id: str, outcome: Outcome) -> None:
        entry = self.ledger.by_job(job_id)
        if entry is None:
            logger.warning("outcome for unknown eval job %s: %s", job_id, outcome)
            return
        if isinstance(outcome, Succeeded):
            self.ledger.put(entry.finished(PartStatus.SUCCEEDED))
        else:
            reason = getattr(outcome, "reason", type(outcome).__name__)
            self.ledger.put(entry.finished(PartStatus.FAILED, reason))
            logger.warning(
                "eval %s/%s attempt %d failed: %s",
                entry.step if entry.step is not None else "final",
                entry.dataset,
                entry.attempt,
                reason,
            )

    def _parts(self, step: int | None) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
        parts: dict[str, dict[str, object]] = {}
        failed: dict[str, str] = {}
        for d in self.spec.part_names:
            e = self.ledger.get((step, d))
            value = read_json_or_none(self.rundir.part(step, d))
            if value is not None and e is not None and e.status is PartStatus.SUCCEEDED:
                parts[d] = value
            elif e is not None and e.reason:
                failed[d] = e.reason
        return parts, failed

    def _merge_step(self, step: int) -> None:
        parts, failed = self._parts(step)
        merged = merge_parts(
            step,
            parts,
            self.spec.part_names,
            partial=True,
            failed=failed,
            metrics=self.spec.all_metrics(),
        )
        atomic_write_json(self.rundir.merged(step), merged)
        self.merged[step] = merged
        best = self._publish_step(step)
        logger.info(
            "step %d merged: %s on %d samples%s; best step %s",
            step,
            self._headline(merged, "overall"),
            merged["overall"]["n"],
            f", missing {sorted(merged['missing'])}" if merged["missing"] else "",
            best.step if best else "none",
        )

    def _headline(self, merged: dict[str, Any], scope: str) -> str:
        """The best-metric's value for a log line (e.g. "overall accuracy 0.9120")."""
        target, metric = self.spec.best_target()
        if target.startswith("tasks/"):  # best.metric names an lmms-eval task's metric
            if scope != "overall":
                return scope
            scope = target
        value = MergedStep.from_json(merged).value(scope, metric)
        shown = "n/a" if value is None else f"{value:.4f}"
        return f"{scope} {metric} {shown}"

    def _publish_step(self, step: int) -> Best | None:
        """Merged file first, then the tracker, then the published record (saved at the end of
        the iteration): a crash in between publishes again on restart (at least once), and
        never loses a result."""
        self.tracker.log_eval(step, flat_metrics(self.merged[step]))
        self.published.eval_steps[step] = time.time()
        self._dirty = True
        return self._best()

    def flush(self) -> None:
        """Write best.json and the published record once per iteration, not once per step."""
        if not self._dirty:
            return
        best = self._best()
        if best is not None:
            atomic_write_json(self.rundir.best, best.to_json())
            self.tracker.summary(
                {"best/step": best.step, "best/metric": best.metric, "best/value": best.value}
            )
        self.published.save(self.rundir)
        self._dirty = False

    def fold_imports(self) -> None:
        """Fold imported results (lmms-eval) into their merged steps and publish them on the
        same eval axis. Parts for a step that is not merged yet wait for it."""
        for step, parts in pending_imports(self.rundir, self.published.imports).items():
            merged = self.merged.get(step)
            if merged is None:
                continue
            flat = fold_into(merged, parts)
            atomic_write_json(self.rundir.merged(step), merged)
            self.tracker.log_eval(step, flat)
            self.published.imports |= {f"{p.parent.name}/{p.name}" for p in parts}
            self._dirty = True
            logger.info("step %d: folded %d imported task result(s)", step, len(parts))

    def _publish_final(self, merged: dict[str, Any]) -> None:
        self.tracker.log_final(int(merged["step"]), flat_metrics(merged))
        self.published.final = True
        self._dirty = True

    def _merge_final(self, eval_step: int) -> None:
        parts, failed = self._parts(None)
        merged = merge_parts(
            eval_step,
            parts,
            self.spec.part_names,
            partial=False,
            failed=failed,
            metrics=self.spec.all_metrics(),
        )
        atomic_write_json(self.rundir.final, merged)
        self._publish_final(merged)
        logger.info(
            "final full eval of step %d: %s on %d samples (%s)",
            eval_step,
            self._headline(merged, "overall"),
            merged["overall"]["n"],
            ", ".join(self._headline(merged, d) for d in merged["datasets"]),
        )

    def _best(self) -> Best | None:
        scope, metric = self.spec.best_target()
        return choose_best(
            self.merged.values(),
            scope,
            metric,
            self.spec.best.resolved_mode,
            name=self.spec.best.metric,
        )

    def _publish_train_metrics(self) -> None:
        """Log train metric lines written since the last call (complete lines only)."""
        path = self.rundir.train_metrics
        if not path.is_file():
            return
        pub = self.published
        with path.open("rb") as f:
            f.seek(pub.train_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        for line in data[:end].splitlines():
            row = json.loads(line)
            step = int(row.pop("step"))
            row.pop("time", None)
            # After a worker restart, steps since the last checkpoint are trained (and
            # reported) again; the tracker keeps the first report of each step.
            if step > pub.train_step:
                self.tracker.log_train(step, row)
                pub.train_step = step
        pub.train_offset += end
        self._dirty = True

"""Training as a Ray Train TorchTrainer, run in a background thread of the controller process.

The controller never waits on it: it watches the files the workers write and asks this handle
for the status. Workers checkpoint into the run directory, which is also how a restarted worker
group (FailureConfig.max_failures) resumes.
"""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from orchestrator.contract.checkpoint import latest_resumable
from orchestrator.contract.layout import RunDir, append_jsonl, read_jsonl
from orchestrator.contract.placement import lost_nodes
from orchestrator.contract.spec import JobSpec
from orchestrator.core.controller import TrainingState, TrainingStatus

logger = logging.getLogger("orch.training")

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


class RayTrainRun:
    def __init__(self, spec: JobSpec, rundir: RunDir) -> None:
        self.spec = spec
        self.rundir = rundir
        self._status = TrainingStatus(TrainingState.RUNNING)
        self._thread = threading.Thread(target=self._fit, name="ray-train-fit", daemon=True)

    def start(self) -> RayTrainRun:
        self._thread.start()
        return self

    def status(self) -> TrainingStatus:
        return self._status

    def _fit(self) -> None:
        import os

        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        from ray.train.v2.api.config import FailureConfig  # ray.train's, typed as Train v2's

        from workers.train import train_loop_per_worker

        tr = self.spec.training
        resources = {"CPU": tr.cpus_per_worker} | ({"GPU": 1} if tr.use_gpu else {})
        failure = FailureConfig(max_failures=tr.max_failures)
        if tr.node_wait_s is not None:
            # Ray Train waits this long for a worker group's placement group, then counts a
            # controller failure; with none allowed, the wait ends training. The variable is
            # one Ray Train propagates from this driver to its controller actor.
            os.environ[START_TIMEOUT_ENV] = f"{tr.node_wait_s:g}"
            failure = FailureConfig(max_failures=tr.max_failures, controller_failure_limit=0)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"run_dir": str(self.rundir.path)},
            scaling_config=ScalingConfig(
                num_workers=tr.num_workers,
                use_gpu=tr.use_gpu,
                resources_per_worker=resources,
                placement_strategy=placement_strategy(tr.placement_strategy),
            ),
            run_config=RunConfig(
                name="train",
                storage_path=str(self.rundir.path / "ray"),
                failure_config=failure,
                callbacks=[FailureRecorder(str(self.rundir.path))],  # type: ignore[list-item]
            ),
        )
        try:
            trainer.fit()
        # Any error ends training; it is recorded and turns into a non-zero exit of the run.
        except Exception as e:  # noqa: BLE001
            reason = no_room_reason(e, self.spec, self.rundir)
            if reason is not None:
                logger.error("training stopped: %s", reason)
                append_jsonl(self.rundir.train_events, {"event": "no_room", "reason": reason})
                self._status = TrainingStatus(TrainingState.FAILED, reason)
                return
            logger.error("training failed: %s", e)
            self._status = TrainingStatus(
                TrainingState.FAILED, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            )
            return
        if self._last_event() == "preempted":
            logger.info("training stopped at a checkpoint on a preemption request")
            self._status = TrainingStatus(TrainingState.PREEMPTED)
            return
        self._status = TrainingStatus(TrainingState.SUCCEEDED)

    def _last_event(self) -> str | None:
        last = last_train_event(self.rundir)
        return None if last is None else str(last.get("event"))


def placement_strategy(setting: str, env: dict[str, str] | None = None) -> str:
    """training.placement_strategy as Ray Train takes it: auto is SPREAD inside a SLURM
    allocation of several nodes (the batch script sets ORCH_RAY_NODES to its node count), so
    that the nodes the user asked for all train, and PACK anywhere else."""
    import os

    if setting != "auto":
        return setting
    nodes = int((os.environ if env is None else env).get("ORCH_RAY_NODES", "0") or 0)
    chosen = "SPREAD" if nodes > 1 else "PACK"
    logger.info("training.placement_strategy = auto: %s (%d allocation node(s))", chosen, nodes)
    return chosen


def last_train_event(rundir: RunDir) -> dict[str, object] | None:
    """The training loop's last event (started, checkpoint, preempted, finished), or None."""
    events = read_jsonl(rundir.train_events)
    return events[-1] if events else None


def training_finished(spec: JobSpec, rundir: RunDir) -> int | None:
    """The step a run's training finished at, when it did (and the spec asks for no more),
    so that continuing the run (a second submission, `orch resume` after a crash during the
    final eval) does not start a worker group only to find nothing left to train."""
    last = last_train_event(rundir)
    if last is None or last.get("event") != "finished":
        return None
    step = last.get("step")
    if not isinstance(step, int):
        return None
    if spec.training.max_steps is not None and step < spec.training.max_steps:
        return None  # the spec asks for more steps than were trained
    return step


def no_room_reason(error: BaseException, spec: JobSpec, rundir: RunDir) -> str | None:
    """The reason training stopped when ``error`` (from ``trainer.fit``) says the worker group
    found no room within training.node_wait_s, else None."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    cause = getattr(error, "controller_failure", None)
    if spec.training.node_wait_s is None or not isinstance(cause, WorkerGroupStartupTimeoutError):
        return None
    tr = spec.training
    each = f"{tr.cpus_per_worker:g} CPU(s)" + (" and 1 GPU" if tr.use_gpu else "")
    latest = latest_resumable(rundir.checkpoints)
    return (
        f"the Ray cluster had no room for the worker group ({tr.num_workers} workers of {each}) "
        f"for training.node_wait_s = {tr.node_wait_s:g} s (a node lost?); the latest complete "
        f"checkpoint is {latest.name if latest else 'none'}: once the cluster has room, "
        f"`orch resume {rundir.name}` (or, for a run submitted with --address, the same `orch "
        f"submit --address ... --run-name {rundir.name}`) continues the run from it"
    )


class FailureRecorder(UserCallback):
    """A Ray Train callback (it runs in Ray Train's controller actor): every worker-group
    failure becomes a ``worker_group_failed`` train event, with each failed rank's error and
    the nodes of the running worker group that Ray no longer has alive (a node lost). The
    ``started`` event that follows is the restart; `orch status` shows the two together."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        rundir = RunDir(Path(self.run_dir))
        errors = {str(r): f"{type(e).__name__}: {e}"[:2000] for r, e in worker_exceptions.items()}
        append_jsonl(
            rundir.train_events,
            {"event": "worker_group_failed", "errors": errors, "lost_nodes": lost_nodes(rundir)},
        )

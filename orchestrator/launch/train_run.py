"""Training as a Ray Train TorchTrainer, run in a background thread of the controller process.

The controller never waits on it: it watches the files the workers write and asks this handle
for the status. Workers checkpoint into the run directory, which is also how a restarted worker
group (FailureConfig.max_failures) resumes.
"""

from __future__ import annotations

import logging
import threading
import traceback

from orchestrator.contract.layout import RunDir, read_jsonl
from orchestrator.contract.spec import JobSpec
from orchestrator.core.controller import TrainingState, TrainingStatus

logger = logging.getLogger("orch.training")


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
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from workers.train import train_loop_per_worker

        tr = self.spec.training
        resources = {"CPU": tr.cpus_per_worker} | ({"GPU": 1} if tr.use_gpu else {})
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"run_dir": str(self.rundir.path)},
            scaling_config=ScalingConfig(
                num_workers=tr.num_workers, use_gpu=tr.use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name="train",
                storage_path=str(self.rundir.path / "ray"),
                failure_config=FailureConfig(max_failures=tr.max_failures),
            ),
        )
        try:
            trainer.fit()
        # Any error ends training; it is recorded and turns into a non-zero exit of the run.
        except Exception as e:  # noqa: BLE001
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

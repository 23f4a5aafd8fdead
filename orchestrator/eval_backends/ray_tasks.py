"""Eval parts as Ray tasks with declared resources, so they run beside training, never queued."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from orchestrator.contract.evalpart import EvalPart
from orchestrator.eval_backends.base import (
    Cancelled,
    Failed,
    Outcome,
    Preempted,
    Succeeded,
    register_backend,
)

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec

logger = logging.getLogger(__name__)


def _run_part(job_json: dict[str, Any], log_path: str) -> str:
    """Runs inside a Ray worker process: evaluate one part, logging to the run directory."""
    import logging as _logging

    from transformers.utils import logging as hf_logging

    from orchestrator.contract.evalpart import EvalPart
    from workers.evaluate import run_eval

    hf_logging.disable_progress_bar()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = _logging.FileHandler(log_path)
    handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root = _logging.getLogger()
    root.addHandler(handler)
    root.setLevel(_logging.INFO)
    try:
        job = EvalPart(**job_json)
        run_eval(job)
        return job.out
    except BaseException:
        root.exception("eval part failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def _warm_up() -> None:
    import workers.evaluate  # noqa: F401


@register_backend("ray")
class RayBackend:
    name = "ray"

    def __init__(self, cpus_per_task: float = 1.0) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(max_retries=0, num_cpus=cpus_per_task)(_run_part)
        self._refs: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        # Start an eval worker process now, with torch and transformers imported, so the first
        # checkpoint's parts do not pay several seconds of imports (Ray reuses idle workers).
        self._warm = ray.remote(num_cpus=cpus_per_task)(_warm_up).remote()

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        """Parts as tasks on the Ray this process joined (``orch submit`` starts or joins the
        run's cluster first); without one (``orch eval``), a local Ray of this machine."""
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        return cls(spec.evaluation.cpus_per_task)

    def submit(self, job: EvalPart, log_path: Path) -> str:
        name = f"eval:{job.dataset}@{'final' if not job.partial else job.step}"
        ref = self._remote.options(name=name).remote(job.to_json(), str(log_path))
        job_id = ref.task_id().hex()
        self._refs[job_id] = ref
        return job_id

    def poll(self) -> dict[str, Outcome]:
        if not self._refs:
            return {}
        ray = self._ray
        ids = list(self._refs)
        ready, _ = ray.wait([self._refs[i] for i in ids], num_returns=len(ids), timeout=0)
        ready_set = set(ready)
        done: dict[str, Outcome] = {}
        for job_id in ids:
            ref = self._refs[job_id]
            if ref not in ready_set:
                continue
            del self._refs[job_id]
            done[job_id] = self._outcome(job_id, ref)
        return done

    def _outcome(self, job_id: str, ref: Any) -> Outcome:
        ray = self._ray
        try:
            return Succeeded(Path(ray.get(ref)))
        except ray.exceptions.TaskCancelledError:
            return Cancelled()
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
            return Preempted(f"{type(e).__name__}: {e}")
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if e.cause is not None else e
            return Failed(f"{type(cause).__name__}: {cause}")

    def running(self) -> set[str]:
        return set(self._refs)

    def cancel(self, job_id: str) -> None:
        if job_id in self._refs:
            self._cancelled.add(job_id)
            self._ray.cancel(self._refs[job_id], force=True)

    def close(self) -> None:
        for job_id in list(self._refs):
            self.cancel(job_id)

"""Eval parts as Ray tasks with declared resources, so they run beside training, never queued."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _logging_to(log_paths: list[str], failure: str) -> Iterator[None]:
    """Inside a Ray worker: this process's log lines (and ``failure`` with its traceback, if
    the block raises) go to each of ``log_paths`` in the run directory, for as long as the block
    runs (the worker process outlives the task)."""
    import logging as _logging

    handlers = []
    for log_path in log_paths:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = _logging.FileHandler(log_path)
        handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handlers.append(handler)
    root = _logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(_logging.INFO)
    try:
        _log_node()
        yield
    except BaseException:
        root.exception(failure)
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def _log_node() -> None:
    """Inside a Ray worker: say which Ray node (id, name, host) the task runs on, in its logs
    (`orch status` reads the name back from each attempt's log: EVAL_NODE)."""
    import os
    import socket

    import ray

    node = ray.get_runtime_context().get_node_id()
    names = [n.get("NodeName") for n in ray.nodes() if n.get("NodeID") == node]
    name = names[0] if names and names[0] else ray.util.get_node_ip_address()
    logging.getLogger("orch.eval").info(
        "on Ray node %s (%s, host %s), worker pid %d", node, name, socket.gethostname(),
        os.getpid(),
    )  # fmt: skip


# The line _log_node writes, as `orch status` reads it: node id, node name.
EVAL_NODE = re.compile(r"on Ray node ([0-9a-f]{56}) \((\S+), host ")


def _run_part(job_json: dict[str, Any], log_path: str) -> str:
    """Runs inside a Ray worker process: evaluate one part, logging to the run directory."""
    from transformers.utils import logging as hf_logging

    from orchestrator.contract.evalpart import EvalPart
    from workers.evaluate import run_eval

    hf_logging.disable_progress_bar()
    with _logging_to([log_path], "eval part failed"):
        job = EvalPart(**job_json)
        run_eval(job)
        return job.out


def _run_group(jobs_json: list[dict[str, Any]], log_paths: list[str]) -> Any:
    """Runs inside a Ray worker process: several parts of one checkpoint, one model load
    (workers.evaluate.run_evals). One return value per part (``num_returns``): the result path,
    or the part's error as a ``_PartError``, so each part has its own outcome. The shared load
    and each part's lines reach every part's log."""
    from transformers.utils import logging as hf_logging

    from orchestrator.contract.evalpart import EvalPart
    from workers.evaluate import run_evals

    hf_logging.disable_progress_bar()
    with _logging_to(log_paths, "eval group failed"):
        jobs = [EvalPart(**j) for j in jobs_json]
        results = run_evals(jobs)
    out = tuple(
        _PartError(f"{type(r).__name__}: {r}") if isinstance(r, BaseException) else job.out
        for job, r in zip(jobs, results, strict=True)
    )
    return out if len(out) > 1 else out[0]


class _PartError:
    """A grouped part's failure, returned (not raised) so the group's other parts succeed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _warm_up() -> None:
    import workers.evaluate  # noqa: F401


@register_backend("ray")
class RayBackend:
    name = "ray"

    def __init__(self, cpus_per_task: float = 1.0, gpus_per_part: float = 0.0) -> None:
        import ray

        self._ray = ray
        # Ray gives a task with num_gpus its own GPUs (CUDA_VISIBLE_DEVICES), never one that a
        # training worker holds; the part evaluates on CUDA only when it was given one.
        self._remote = ray.remote(max_retries=0, num_cpus=cpus_per_task, num_gpus=gpus_per_part)(
            _run_part
        )
        self._group = ray.remote(max_retries=0, num_cpus=cpus_per_task, num_gpus=gpus_per_part)(
            _run_group
        )
        self.group_parts = False
        self._refs: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        self._cancelled_tasks: set[str] = set()
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
        backend = cls(spec.evaluation.cpus_per_task, spec.evaluation.gpus_per_part)
        backend.group_parts = spec.evaluation.group_parts
        return backend

    def submit(self, job: EvalPart, log_path: Path) -> str:
        name = f"eval:{job.dataset}@{'final' if not job.partial else job.step}"
        ref = self._remote.options(name=name).remote(job.to_json(), str(log_path))
        job_id = ref.task_id().hex()
        self._refs[job_id] = ref
        return job_id

    def submit_array(self, parts: list[tuple[EvalPart, Path]]) -> list[str]:
        """A checkpoint's parts: one task with one model load when ``group_parts`` (one return
        value, hence one outcome, per part); else one task per part. Cancelling a grouped part
        cancels its group."""
        if not self.group_parts or len(parts) < 2:
            return [self.submit(job, log) for job, log in parts]
        first = parts[0][0]
        name = f"eval:{len(parts)} parts@{'final' if not first.partial else first.step}"
        refs: list[Any] = self._group.options(name=name, num_returns=len(parts)).remote(  # type: ignore[assignment]
            [job.to_json() for job, _ in parts], [str(log) for _, log in parts]
        )
        task = refs[0].task_id().hex()
        ids = []
        for i, ref in enumerate(refs):
            job_id = f"{task}:{i}"
            self._refs[job_id] = ref
            ids.append(job_id)
        return ids

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
            value = ray.get(ref)
            if isinstance(value, _PartError):
                return Failed(value.reason)
            return Succeeded(Path(value))
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
            task = job_id.split(":")[0]
            if task in self._cancelled_tasks:
                return  # a grouped part's sibling cancelled the task they share
            self._cancelled_tasks.add(task)
            self._ray.cancel(self._refs[job_id], force=True)

    def close(self) -> None:
        for job_id in list(self._refs):
            self.cancel(job_id)

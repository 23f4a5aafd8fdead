"""Eval parts as local subprocesses: ``python -m workers.evaluate JOB.json``. Real, not a mock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Self

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.evalpart import EvalPart
from orchestrator.eval_backends.base import (
    Cancelled,
    Failed,
    Outcome,
    Succeeded,
    register_backend,
    tail,
)

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec


@register_backend("local")
class LocalBackend:
    name = "local"

    def __init__(self, threads_per_task: int = 1) -> None:
        self.threads = threads_per_task
        self._procs: dict[str, tuple[subprocess.Popen[bytes], EvalPart, Path]] = {}
        self._cancelled: set[str] = set()

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        return cls(max(1, int(spec.evaluation.cpus_per_task)))

    def submit(self, job: EvalPart, log_path: Path) -> str:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job_file = log_path.with_suffix(".job.json")
        atomic_write_json(job_file, job.to_json())
        # CPU parts only (the spec refuses gpus_per_part with this backend): hide the GPUs.
        env = os.environ | {"OMP_NUM_THREADS": str(self.threads), "CUDA_VISIBLE_DEVICES": ""}
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.evaluate", str(job_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        job_id = f"pid:{proc.pid}"
        self._procs[job_id] = (proc, job, log_path)
        return job_id

    def poll(self) -> dict[str, Outcome]:
        done: dict[str, Outcome] = {}
        for job_id, (proc, job, log) in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[job_id]
            if job_id in self._cancelled:
                done[job_id] = Cancelled()
            elif code == 0 and Path(job.out).is_file():
                done[job_id] = Succeeded(Path(job.out))
            else:
                done[job_id] = Failed(f"exit code {code}: {tail(log, 5)}")
        return done

    def running(self) -> set[str]:
        return set(self._procs)

    def cancel(self, job_id: str) -> None:
        if job_id in self._procs:
            self._cancelled.add(job_id)
            self._procs[job_id][0].terminate()

    def close(self) -> None:
        for job_id in list(self._procs):
            self.cancel(job_id)
        for proc, _, _ in self._procs.values():
            proc.wait(timeout=30)

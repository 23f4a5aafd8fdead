"""Eval parts as SLURM jobs through submitit: small allocations of their own, never training's.

Submission goes through submitit: one job array per checkpoint with an element per dataset, or,
with ``evaluation.group_parts``, one job that loads the checkpoint once and evaluates all of its
parts (each still its own result file and outcome; a failed part is retried alone).

Polling does not depend on SLURM accounting (sacct needs slurmdbd and a database,
which many clusters restrict): a part is done when submitit's result file exists; one `squeue`
call covers every live job; a job that left the queue without a result is explained by
`scontrol show job` (FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED).

sbatch runs with a clean environment (``sbatch_environ``). Parts are often submitted from inside
an allocation (the controller of ``orch submit --cluster slurm``, or an ``salloc`` shell), whose
``SLURM_*`` job variables sbatch would otherwise export into the part; ``SLURM_MEM_PER_CPU``
from the allocation next to the part's own ``SLURM_MEM_PER_NODE`` makes the part's srun fail
("SLURM_MEM_PER_CPU, SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"), and
``SBATCH_*`` input variables would override the part's own ``#SBATCH`` lines.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from functools import cache
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
    tail,
)

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec

logger = logging.getLogger(__name__)

# A job that left squeue is given this long for its result file to appear (shared filesystems
# make the write visible after the job ends) before scontrol is asked why it has none.
RESULT_GRACE_S = 10.0
ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
    "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
}  # fmt: skip

# The environment sbatch sees. Every variable named SLURM_*, SBATCH_*, SALLOC_* or SRUN_* is
# dropped (an allocation's job variables: SLURM_JOB_ID, SLURM_MEM_PER_CPU, SLURM_CPUS_PER_TASK,
# ...; sbatch's and srun's input variables, which would override or clash with the part's own
# #SBATCH lines) except these, which a user sets on purpose and which say where and as whom to
# submit rather than what one job is:
KEPT_SLURM_VARIABLES = frozenset({
    "SLURM_CONF",  # which slurm.conf, i.e. which cluster
    "SLURM_CLUSTERS", "SBATCH_CLUSTERS",  # a federation's cluster to submit to
    "SLURM_TIME_FORMAT",  # how SLURM's commands print times
    "SBATCH_ACCOUNT", "SBATCH_PARTITION", "SBATCH_QOS", "SBATCH_RESERVATION", "SBATCH_WCKEY",
})  # fmt: skip
JOB_VARIABLE_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")


def job_variables(environ: Mapping[str, str], explicit: Iterable[str] = ()) -> list[str]:
    """The names in ``environ`` that sbatch must not see: the SLURM job variables of an
    allocation the caller may be in, and SLURM input variables other than KEPT_SLURM_VARIABLES.
    ``explicit`` names the sbatch options the submission sets itself (``partition``,
    ``account``, ...): their SBATCH_* variable is dropped too, since sbatch lets an input
    variable override the script's #SBATCH line."""
    overridden = {"SBATCH_" + o.upper().replace("-", "_") for o in explicit}
    return sorted(
        name
        for name in environ
        if name.startswith(JOB_VARIABLE_PREFIXES)
        and (name not in KEPT_SLURM_VARIABLES or name in overridden)
    )


def user_dirs(environ: Mapping[str, str]) -> list[str]:
    """``env`` arguments that give an eval part the user's own HOME and TMPDIR when it is
    submitted from inside orch's training allocation, whose per-job HOME and TMPDIR
    (ORCH_USER_HOME/ORCH_USER_TMPDIR keep the originals) are removed at its teardown and exist
    on its node only. Paths, never secrets."""
    if "ORCH_USER_HOME" not in environ:
        return []
    home = f"HOME={environ['ORCH_USER_HOME']}"
    tmp = environ.get("ORCH_USER_TMPDIR", "")
    # env takes its -u options before its NAME=VALUE assignments
    return [home, f"TMPDIR={tmp}"] if tmp else ["-u", "TMPDIR", home]


def sbatch_environ(
    environ: Mapping[str, str] | None = None, explicit: Iterable[str] = ()
) -> dict[str, str]:
    """``environ`` (default: this process's) without ``job_variables``: what sbatch may see, and
    so what the submitted job inherits besides its own SLURM_* variables."""
    environ = os.environ if environ is None else environ
    dropped = set(job_variables(environ, explicit))
    return {k: v for k, v in environ.items() if k not in dropped}


@cache
def _clean_executor_class() -> type[Any]:
    """submitit's SlurmExecutor, with sbatch run through ``env -u NAME...`` for every job
    variable (names only on the command line: values such as tokens never reach ``ps``)."""
    import submitit
    from submitit.core import utils
    from submitit.slurm.slurm import SlurmJob

    class CleanEnvSlurmExecutor(submitit.SlurmExecutor):
        explicit: tuple[str, ...] = ()  # sbatch options set by the script (see job_variables)

        def _make_submission_command(self, submission_file_path: Path) -> list[str]:
            unset = [a for n in job_variables(os.environ, self.explicit) for a in ("-u", n)]
            return ["env", *unset, *user_dirs(os.environ), "sbatch", str(submission_file_path)]

        def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
            if len(delayed_submissions) == 1:
                return list(super()._internal_process_submissions(delayed_submissions))
            # submitit 1.5's array branch, except that the array is submitted by this class:
            # submitit's own hands it to a plain SlurmExecutor, whose sbatch sees everything.
            folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            pickle_paths = []
            for d in delayed_submissions:
                pickle_path = folder / f"{uuid.uuid4().hex}.pkl"
                d.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
                d.dump(pickle_path)
                pickle_paths.append(pickle_path)
            array_ex = type(self)(self.folder, self.max_num_timeout)
            array_ex.explicit = self.explicit
            array_ex.update_parameters(**self.parameters)
            array_ex.parameters["map_count"] = len(delayed_submissions)
            self._throttle()
            first = array_ex._submit_command(self._submitit_command_str)
            tasks = list(range(first.num_tasks))
            jobs: list[Any] = [
                SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{a}", tasks=tasks)
                for a in range(len(delayed_submissions))
            ]
            for job, pickle_path in zip(jobs, pickle_paths, strict=True):
                job.paths.move_temporary_file(pickle_path, "submitted_pickle")
            return jobs

    return CleanEnvSlurmExecutor


def _stop(signum: int, frame: Any) -> None:
    logger.warning("eval part stopped by %s (cancelled or preempted)", signal.Signals(signum).name)
    raise SystemExit(128 + signum)


# The line a SLURM part writes (to its job's stderr) to say where it runs, as `orch status`
# reads it back (part_node): the node's name.
SLURM_NODE = re.compile(r"on SLURM node (\S+) \(host ")


def _log_node() -> None:
    logger.info(
        "on SLURM node %s (host %s, job %s)", os.environ.get("SLURMD_NODENAME", "unknown"),
        socket.gethostname(), os.environ.get("SLURM_JOB_ID", "unknown"),
    )  # fmt: skip


def part_node(log_text: str) -> str | None:
    """The SLURM node a part's attempt ran on, from the text of its log in the run directory
    (_point_log: the SLURM job's id, then its stdout and stderr files), or None if it has not
    said yet."""
    lines = log_text.splitlines()
    if len(lines) < 3 or not lines[0].startswith("slurm job "):
        return None
    stderr = Path(lines[2])
    found = SLURM_NODE.search(stderr.read_text(errors="replace")) if stderr.is_file() else None
    return found[1] if found else None


def run_part(job: dict[str, Any]) -> str:
    """The callable a SLURM job runs (imported by name in the job, so it must be top level)."""
    # submitit ignores SIGTERM (it waits for USR2 to checkpoint), so `scancel` would leave the part
    # running, holding its allocation, until SLURM's KillWait (30 s by default) sends SIGKILL. An
    # eval part has nothing to save (its result is written atomically, and a cancelled or preempted
    # part is re-run whole), so it stops at once, even while still importing torch below.
    signal.signal(signal.SIGTERM, _stop)
    from transformers.utils import logging as hf_logging

    from workers.evaluate import run_eval

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _log_node()
    eval_job = EvalPart(**job)
    logger.info("eval part %s (%s) of step %s", eval_job.dataset, eval_job.kind, eval_job.step)
    hf_logging.disable_progress_bar()
    run_eval(eval_job)
    return eval_job.out


def run_group(jobs: list[dict[str, Any]]) -> list[str | None]:
    """The callable of a grouped SLURM job: several parts of one checkpoint, one model load
    (workers.evaluate.run_evals). One entry per part: None when it succeeded, else its error."""
    signal.signal(signal.SIGTERM, _stop)
    from transformers.utils import logging as hf_logging

    from workers.evaluate import run_evals

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _log_node()
    parts = [EvalPart(**job) for job in jobs]
    logger.info("%d eval parts of step %s: %s", len(parts), parts[0].step,
                ", ".join(p.dataset for p in parts))  # fmt: skip
    hf_logging.disable_progress_bar()
    results = run_evals(parts)
    return [f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else None for r in results]


@register_backend("slurm")
class SlurmBackend:
    """Also an ``ArrayBackend``: ``submit_array`` puts a checkpoint's parts in one job array, or
    in one job when ``group_parts`` (part ids ``JOBID:i``; cancelling one cancels the job). And
    an ``AdoptingBackend``: a part's job outlives the controller that submitted it."""

    name = "slurm"

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        ev = spec.evaluation
        extra: dict[str, Any] = dict(ev.slurm.additional)
        if ev.gpus_per_part > 0:
            extra["gpus_per_task"] = math.ceil(ev.gpus_per_part)
        return cls(
            rundir.logs / "slurm",
            partition=ev.slurm.partition,
            cpus_per_task=max(1, math.ceil(ev.cpus_per_task)),
            mem_gb=ev.slurm.mem_gb,
            timeout_min=ev.slurm.timeout_min,
            extra=extra,
            group_parts=ev.group_parts,
        )

    def __init__(
        self,
        folder: Path,
        *,
        partition: str | None = None,
        cpus_per_task: int = 1,
        mem_gb: float = 4.0,
        timeout_min: int = 60,
        extra: dict[str, Any] | None = None,
        group_parts: bool = False,
    ) -> None:
        self.folder = folder
        self.group_parts = group_parts
        self.executor = _clean_executor_class()(folder=str(folder / "%j"))
        mem = f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"
        params: dict[str, Any] = {
            "cpus_per_task": cpus_per_task,
            "mem": mem,
            "time": timeout_min,
            "additional_parameters": dict(extra or {}),
        }
        if partition:
            params["partition"] = partition
        self.executor.update_parameters(**params)
        # Options the part's script sets itself, which an SBATCH_* variable would override.
        self.executor.explicit = (*(["partition"] if partition else []), *(extra or {}))
        # part id -> (submitit job, part, index in its group's result or None when ungrouped)
        self._jobs: dict[str, tuple[Any, EvalPart, int | None]] = {}
        self._left_queue: dict[str, float] = {}
        self._cancelled: set[str] = set()  # part ids
        self._scancelled: set[str] = set()  # SLURM job ids

    def submit(self, job: EvalPart, log_path: Path) -> str:
        return self.submit_array([(job, log_path)])[0]

    def submit_array(self, parts: list[tuple[EvalPart, Path]]) -> list[str]:
        """One SLURM job array for several parts (one element each), or one job for all of them
        when ``group_parts``; returns their part ids in order."""
        first = parts[0][0]
        name = f"orch-eval-{'final' if not first.partial else first.step}"
        self.executor.update_parameters(job_name=name)
        if self.group_parts and len(parts) > 1:
            sjob = self.executor.submit(run_group, [job.to_json() for job, _ in parts])
            ids = [f"{sjob.job_id}:{i}" for i in range(len(parts))]
            for i, (part_id, (job, log_path)) in enumerate(zip(ids, parts, strict=True)):
                self._jobs[part_id] = (sjob, job, i)
                self._point_log(log_path, sjob)
            logger.info("submitted SLURM job %s for %d parts", sjob.job_id, len(parts))
            return ids
        with self.executor.batch():
            submitted = [self.executor.submit(run_part, job.to_json()) for job, _ in parts]
        ids = []
        for sjob, (job, log_path) in zip(submitted, parts, strict=True):
            self._jobs[sjob.job_id] = (sjob, job, None)
            self._point_log(log_path, sjob)
            ids.append(sjob.job_id)
        logger.info("submitted SLURM job(s) %s", ", ".join(ids))
        return ids

    def adopt(self, job: EvalPart, job_id: str) -> bool:
        """Follow a part an earlier controller of the run submitted (a requeued or resumed
        run): it still runs, or has left its result, in this backend's folder."""
        from submitit.slurm.slurm import SlurmJob

        slurm_id, grouped, index = job_id.partition(":")
        sjob: Any = SlurmJob(folder=self.executor.folder, job_id=slurm_id, tasks=(0,))
        if not sjob.paths.result_pickle.exists():
            out = subprocess.run(
                ["squeue", "-h", "-r", "-o", "%i", "-j", slurm_id],
                capture_output=True,
                text=True,
                check=False,
            )
            if slurm_id not in out.stdout.split():
                return False
        self._jobs[job_id] = (sjob, job, int(index) if grouped else None)
        return True

    def detach(self) -> list[str]:
        ids = sorted(self._jobs)
        self._jobs.clear()
        self._left_queue.clear()
        return ids

    @staticmethod
    def _point_log(log_path: Path, sjob: Any) -> None:
        """The part's log in the run directory points at SLURM's own stdout/stderr files."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"slurm job {sjob.job_id}\n{sjob.paths.stdout}\n{sjob.paths.stderr}\n")

    def poll(self) -> dict[str, Outcome]:
        if not self._jobs:
            return {}
        queued = self._squeue()
        done: dict[str, Outcome] = {}
        now = time.time()
        for job_id, (sjob, job, index) in list(self._jobs.items()):
            if sjob.paths.result_pickle.exists():
                done[job_id] = self._from_result(sjob, job, index)
            elif sjob.job_id in queued:
                continue
            elif now - self._left_queue.setdefault(job_id, now) > RESULT_GRACE_S or (
                job_id in self._cancelled
            ):
                outcome = self._from_scontrol(sjob.job_id, sjob, job_id in self._cancelled)
                if outcome is None:  # still active after all: keep waiting
                    self._left_queue.pop(job_id)
                else:
                    done[job_id] = outcome
        for job_id in done:
            self._jobs.pop(job_id, None)
            self._left_queue.pop(job_id, None)
        return done

    def _squeue(self) -> set[str]:
        ids = ",".join(sorted({sjob.job_id for sjob, _, _ in self._jobs.values()}))
        # -r: one line per array element (pending elements are otherwise shown as 23_[1-2]).
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ids],
            capture_output=True,
            text=True,
            check=False,
        )
        # squeue exits 1 when none of the ids is known any more: that means all left the queue.
        return set(out.stdout.split())

    def _from_result(self, sjob: Any, job: EvalPart, index: int | None) -> Outcome:
        from submitit.core.utils import pickle_load

        status, payload = pickle_load(sjob.paths.result_pickle)
        if status == "success" and index is not None and payload[index] is not None:
            return Failed(f"slurm job {sjob.job_id}, part {job.dataset}: {payload[index]}")
        if status == "success" and Path(job.out).is_file():
            return Succeeded(Path(job.out))
        reason = str(payload).strip().splitlines()
        return Failed(f"slurm job {sjob.job_id}: {reason[-1] if reason else status}")

    def _from_scontrol(self, job_id: str, sjob: Any, cancelled: bool) -> Outcome | None:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=False
        ).stdout
        state = next(
            (f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "UNKNOWN"
        )
        if state in ACTIVE_STATES and not cancelled:
            return None
        if cancelled or state == "CANCELLED":
            return Cancelled()
        if state in ("PREEMPTED", "NODE_FAIL", "BOOT_FAIL"):
            return Preempted(f"slurm job {job_id}: {state}")
        return Failed(f"slurm job {job_id}: {state}; {tail(Path(sjob.paths.stderr), 5)}")

    def running(self) -> set[str]:
        return set(self._jobs)

    def cancel(self, job_id: str) -> None:
        if job_id not in self._jobs:
            return
        self._cancelled.add(job_id)
        slurm_id = self._jobs[job_id][0].job_id
        if slurm_id in self._scancelled:
            return  # a grouped part's sibling cancelled the job they share
        self._scancelled.add(slurm_id)
        out = subprocess.run(["scancel", slurm_id], capture_output=True, text=True, check=False)
        if out.returncode != 0:  # e.g. it ended meanwhile; poll() reports how it ended
            logger.warning("scancel %s: %s", slurm_id, out.stderr.strip() or out.returncode)

    def close(self) -> None:
        for job_id in list(self._jobs):
            self.cancel(job_id)

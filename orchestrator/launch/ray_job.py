"""`orch submit JOB.toml --address http://HEAD:8265`: the controller as a Ray job.

The run directory (and its resolved spec) is created at submission, on a filesystem the head
shares; the job's entrypoint is ``orch resume RUN --ray-address auto``, so the controller runs
on the cluster, survives the client, and a resubmission continues the same run. The job's
submission id is ``orch-<run>`` (``-2``, ``-3``... for later submissions of the same run), so it
is easy to find in the dashboard; ``RUN/ray_job.json`` records the address and id, and
``orch status / logs / cancel RUN`` go through the Jobs API with them.

Ray 2.60 heads use token authentication by default. The client sends the token when
``RAY_AUTH_MODE=token`` and finds it in ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``; orch turns the mode on when one of them is there. Secrets (the token,
WANDB_API_KEY) are never put into the job's runtime_env (the dashboard shows it) nor written to
the run directory: the job runs with the head's environment.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import ClusterError
from orchestrator.contract.layout import RunDir, read_json_or_none

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from orchestrator.contract.spec import JobSpec

logger = logging.getLogger("orch.ray_jobs")

JOB_FILE = "ray_job.json"  # RunDir.ray_job


def enable_token_auth() -> None:
    """Send Ray's auth token when one is available and the user has not chosen a mode."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def client(address: str) -> JobSubmissionClient:
    enable_token_auth()
    from ray.exceptions import RayError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, RayError, ValueError) as e:
        raise ClusterError(
            f"cannot reach the Ray Jobs API at {address}: {e}. Is the head up (for a local one: "
            "cluster/local/ray.sh status)? With token authentication, export RAY_AUTH_TOKEN or "
            "keep the head's token in ~/.ray/auth_token."
        ) from e


def entrypoint(rundir: RunDir, python: str, workdir: Path) -> str:
    """The job's shell command; every value quoted (run names and paths are user input)."""
    q = shlex.quote
    return (
        f"cd {q(str(workdir))} && exec {q(python)} -m orchestrator.cli resume {q(rundir.name)} "
        f"--runs-dir {q(str(rundir.path.parent))} --ray-address auto --no-dashboard"
    )


def submit_ray_job(
    spec: JobSpec, run_name: str | None, address: str, python: str | None = None
) -> tuple[RunDir, str]:
    """Validate, create the run directory, submit the controller; return (run, submission id)."""
    from orchestrator.checks.capacity import check_fits, ray_nodes
    from orchestrator.launch.submit import open_run, preflight

    jobs = client(address)  # fail on an unreachable head before writing anything
    # Training that no node layout of this cluster holds would wait for resources forever.
    check_fits(spec, ray_nodes(address), f"the Ray cluster at {address}", "add nodes to it")
    preflight(spec, run_path=spec.runs_dir / (run_name or ""))
    rundir = open_run(spec.model_copy(update={"ray_address": "auto"}), run_name)
    taken = {j.submission_id for j in jobs.list_jobs()}
    submission_id, k = f"orch-{rundir.name}", 2
    while submission_id in taken:
        submission_id, k = f"orch-{rundir.name}-{k}", k + 1
    command = entrypoint(rundir, python or sys.executable, Path.cwd())
    jobs.submit_job(
        entrypoint=command,
        submission_id=submission_id,
        metadata={"orch_run": rundir.name, "run_dir": str(rundir.path)},
    )
    atomic_write_json(
        rundir.path / JOB_FILE,
        {"address": address, "submission_id": submission_id, "entrypoint": command},
    )
    if os.environ.get("WANDB_API_KEY") and spec.tracking.mode == "online":
        logger.warning(
            "WANDB_API_KEY is not forwarded to the Ray job (a runtime_env would show it in the "
            "dashboard): set it in the environment of the Ray head"
        )
    return rundir, submission_id


def recorded_job(rundir: RunDir) -> dict[str, str] | None:
    """RUN/ray_job.json, when the run was submitted to a Ray cluster."""
    data = read_json_or_none(rundir.path / JOB_FILE)
    return {str(k): str(v) for k, v in data.items()} if data else None


def job_status(rundir: RunDir) -> dict[str, Any] | None:
    """The Jobs API's view of the run's job; an unreachable head is reported, not raised."""
    job = recorded_job(rundir)
    if job is None:
        return None
    try:
        info = client(job["address"]).get_job_info(job["submission_id"])
    except (ClusterError, RuntimeError, ConnectionError) as e:
        return {**job, "status": "UNKNOWN", "message": f"head unreachable: {e}"}
    return {**job, "status": str(info.status), "message": info.message or ""}


def job_logs(rundir: RunDir) -> str:
    job = _require_job(rundir)
    try:
        return str(client(job["address"]).get_job_logs(job["submission_id"]))
    except RuntimeError as e:
        raise ClusterError(f"Ray job {job['submission_id']}: {e}") from e


def follow_logs(rundir: RunDir) -> None:
    """Stream the job's driver log until the job ends."""
    import asyncio

    job = _require_job(rundir)
    jobs = client(job["address"])

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job["submission_id"]):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())


def stop_job(rundir: RunDir) -> str:
    job = _require_job(rundir)
    jobs = client(job["address"])
    try:
        stopped = jobs.stop_job(job["submission_id"])
    except RuntimeError as e:
        raise ClusterError(f"Ray job {job['submission_id']}: {e}") from e
    status = str(jobs.get_job_status(job["submission_id"]))
    return f"stop requested for Ray job {job['submission_id']} ({status})" + (
        "" if stopped else "; it had already ended"
    )


def _require_job(rundir: RunDir) -> dict[str, str]:
    job = recorded_job(rundir)
    if job is None:
        raise ClusterError(f"{rundir.path}: not submitted to a Ray cluster (no {JOB_FILE})")
    return job

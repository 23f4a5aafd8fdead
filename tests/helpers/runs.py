"""Runs that several tests read, made once per session by conftest's fixtures."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoRun:
    """One finished `orch submit` of the demo job (120 steps, a checkpoint every 40), run once per
    session as a user types it. Tests read it; the one that writes into it (an on-demand eval,
    test_e2e) writes only what no other test reads."""

    job: Path
    run: Path
    proc: subprocess.CompletedProcess[str]
    launched: float  # time.time() when `orch submit` started, and when it exited
    exited: float
    inputs: dict[str, str]  # the job's folder, data and model paths, by role (job_by_role)


@dataclass(frozen=True)
class MeasuredPlan:
    """`orch plan --measure 2 --json` of the session demo run's job, run once per session: the
    job, the plan it printed, how long it took, and what its runs folder held afterwards."""

    job: Path
    plan: dict[str, Any]
    plan_s: float
    runs_left: list[str]
    inputs: dict[str, str]  # the job's folder, data and model paths, by role (job_by_role)


def job_by_role(job: Path, inputs: dict[str, str]) -> str:
    """The job file's text with each input path replaced by its role (``<model>``): the shared
    records are made by whichever xdist worker asks first, each with its own data and model."""
    text = job.read_text()
    for role, path in sorted(inputs.items(), key=lambda kv: -len(kv[1])):  # longest first
        text = text.replace(path, f"<{role}>")
    return text

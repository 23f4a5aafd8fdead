"""Waiting on an eval backend, and comparing result files across backends."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.eval_backends.base import EvalBackend, Outcome
from tests.helpers.waiting import wait_for


def wait(backend: EvalBackend, job_id: str, timeout: float = 300) -> Outcome:
    """Poll ``backend`` until ``job_id`` has an outcome (AssertionError after ``timeout`` s)."""
    done: dict[str, Outcome] = {}

    def finished() -> bool:
        done.update(backend.poll())
        return job_id in done

    wait_for(finished, timeout, f"{job_id} to finish", interval=0.1)
    return done[job_id]


def comparable(path: Path) -> dict[str, object]:
    """A result file without what legitimately differs between backends."""
    result = json.loads(path.read_text())
    for key in ("timings", "backend", "checkpoint"):
        result.pop(key)
    return result

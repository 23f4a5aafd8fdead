"""One interface for every place an eval part can run: submit, poll, cancel -> typed outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from orchestrator.contract.evalpart import EvalJob


@dataclass(frozen=True)
class Succeeded:
    result: Path


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Preempted:
    reason: str


@dataclass(frozen=True)
class Cancelled:
    pass


Outcome = Succeeded | Failed | Preempted | Cancelled


@runtime_checkable
class EvalBackend(Protocol):
    name: str

    def submit(self, job: EvalJob, log_path: Path) -> str:
        """Start the part; return a backend job id. Must not block on the part's work."""
        ...

    def poll(self) -> dict[str, Outcome]:
        """Outcomes of parts that ended since the last poll, by job id. Never blocks."""
        ...

    def running(self) -> set[str]:
        """Job ids submitted by this backend object that have not ended yet."""
        ...

    def cancel(self, job_id: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ArrayBackend(EvalBackend, Protocol):
    """A backend that starts several parts as one submission (a SLURM job array: one
    scheduling decision, one entry in the queue). The controller checks for it with
    ``isinstance``; a backend without it gets one ``submit`` per part."""

    def submit_array(self, parts: list[tuple[EvalJob, Path]]) -> list[str]:
        """Start every (job, log path) of ``parts`` together; return their job ids in order."""
        ...


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for failure reasons."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class NullBackend:
    """For a controller that only merges and publishes (a finished run, a benchmark): it has
    nothing to run, and a submission is a bug."""

    name = "none"

    def submit(self, job: EvalJob, log_path: Path) -> str:
        raise AssertionError(f"nothing may be submitted here (got {job.dataset}@{job.step})")

    def poll(self) -> dict[str, Outcome]:
        return {}

    def running(self) -> set[str]:
        return set()

    def cancel(self, job_id: str) -> None: ...

    def close(self) -> None: ...

"""One interface for every place an eval part can run: submit, poll, cancel -> typed outcomes.

Backends are found by name: a backend class registers itself with ``@register_backend("name")``
and builds itself from the job spec (``from_spec``); ``orchestrator.eval_backends.make_backend``
is the one factory. A new backend is one module with one registration, imported by this
package's ``__init__``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, TypeVar, runtime_checkable

from orchestrator.contract.errors import SpecError
from orchestrator.contract.evalpart import EvalPart

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec


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

    def submit(self, job: EvalPart, log_path: Path) -> str:
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

    def submit_array(self, parts: list[tuple[EvalPart, Path]]) -> list[str]:
        """Start every (job, log path) of ``parts`` together; return their job ids in order."""
        ...


@runtime_checkable
class AdoptingBackend(EvalBackend, Protocol):
    """A backend whose parts outlive the controller that submitted them (SLURM jobs are
    allocations of their own): a new controller of the run takes over the parts its
    predecessor left running, rather than evaluating them a second time, and a preempted
    controller leaves them running for its successor (``detach``)."""

    def adopt(self, job: EvalPart, job_id: str) -> bool:
        """Follow ``job_id``, submitted by an earlier controller of this run for ``job``, when it
        is still queued or running or has left its result; False when it is gone (the part is
        then submitted again)."""
        ...

    def detach(self) -> list[str]:
        """Stop following every part without cancelling it; return their job ids."""
        ...


class RegisteredBackend(EvalBackend, Protocol):
    """What the registry holds: a backend class that builds itself from the job spec."""

    @classmethod
    def from_spec(cls, spec: JobSpec, rundir: RunDir) -> Self:
        """A backend ready to submit this run's eval parts (resources from ``spec.evaluation``,
        files under ``rundir``)."""
        ...


B = TypeVar("B", bound=type[RegisteredBackend])
_BACKENDS: dict[str, type[RegisteredBackend]] = {}


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make the backend class selectable as ``evaluation.backend = name``."""

    def register(cls: B) -> B:
        if cls.name != name:
            raise TypeError(f"{cls.__name__}.name is {cls.name!r}, registered as {name!r}")
        known = _BACKENDS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"eval backend {name!r} is already registered ({known.__qualname__})")
        _BACKENDS[name] = cls
        return cls

    return register


def get_backend_class(name: str) -> type[RegisteredBackend]:
    from orchestrator.contract.plugins import load_plugins

    load_plugins()  # a plugin module may register a backend too
    try:
        return _BACKENDS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _BACKENDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(
            f"evaluation.backend: unknown eval backend {name!r}; {hint}known backends: "
            f"{', '.join(known_backends())}"
        ) from None


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for failure reasons."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class NullBackend:
    """For a controller that only merges and publishes (a finished run, a benchmark): it has
    nothing to run, and a submission is a bug."""

    name = "none"

    def submit(self, job: EvalPart, log_path: Path) -> str:
        raise AssertionError(f"nothing may be submitted here (got {job.dataset}@{job.step})")

    def poll(self) -> dict[str, Outcome]:
        return {}

    def running(self) -> set[str]:
        return set()

    def cancel(self, job_id: str) -> None: ...

    def close(self) -> None: ...

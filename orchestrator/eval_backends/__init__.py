"""Where eval parts run: one interface (``base.EvalBackend``), one module per engine.

``make_backend`` builds the backend a job spec names. The built-in backends are imported here
so that they register; none imports its engine (Ray, submitit) until a backend is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.eval_backends import local, ray_tasks, slurm_jobs  # noqa: F401  (register)
from orchestrator.eval_backends.base import (
    AdoptingBackend,
    ArrayBackend,
    EvalBackend,
    get_backend_class,
    known_backends,
    register_backend,
)

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec


def make_backend(spec: JobSpec, rundir: RunDir, name: str | None = None) -> EvalBackend:
    """The eval backend ``name`` (default: the spec's ``evaluation.backend``), built from the
    spec; an unknown name is a SpecError listing the known ones."""
    return get_backend_class(name or spec.evaluation.backend).from_spec(spec, rundir)


__all__ = [
    "AdoptingBackend",
    "ArrayBackend",
    "EvalBackend",
    "get_backend_class",
    "known_backends",
    "make_backend",
    "register_backend",
]

"""Backends and trackers found by name: one factory each, built from the spec; capabilities
declared by protocols (isinstance), not discovered with getattr."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import pytest

from orchestrator.contract.errors import SpecError
from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.layout import RunDir
from orchestrator.eval_backends import (
    ArrayBackend,
    EvalBackend,
    get_backend_class,
    known_backends,
    make_backend,
    register_backend,
)
from orchestrator.eval_backends import base as backend_base
from orchestrator.eval_backends.local import LocalBackend
from orchestrator.eval_backends.slurm_jobs import SlurmBackend
from orchestrator.tracking import (
    DurableTracker,
    MemoryTracker,
    NullTracker,
    Tracker,
    WandbTracker,
    known_trackers,
    make_tracker,
    register_tracker,
)
from orchestrator.tracking import base as tracker_base
from tests.helpers.jobs import make_spec


@pytest.fixture
def run(tmp_path: Path) -> tuple[Any, RunDir]:
    rundir = RunDir(tmp_path / "run")
    rundir.create("", {})
    return make_spec(tmp_path), rundir


def with_updates(spec: Any, section: str, **values: Any) -> Any:
    return spec.model_copy(update={section: getattr(spec, section).model_copy(update=values)})


# --------------------------------------------------------------------------- backends


def test_builtin_backends_are_registered() -> None:
    assert {"local", "ray", "slurm"} <= set(known_backends())
    assert get_backend_class("local") is LocalBackend
    assert get_backend_class("slurm") is SlurmBackend


def test_unknown_backend_lists_the_known_ones(run: tuple[Any, RunDir]) -> None:
    spec, rundir = run
    with pytest.raises(SpecError, match=r"unknown eval backend 'locl'; did you mean 'local'\?"):
        make_backend(spec, rundir, "locl")
    with pytest.raises(SpecError, match="known backends: local, ray, slurm"):
        get_backend_class("kubernetes")


def test_make_backend_builds_from_the_spec(run: tuple[Any, RunDir]) -> None:
    spec, rundir = run
    spec = with_updates(spec, "evaluation", backend="local", cpus_per_task=3.0)
    backend = make_backend(spec, rundir)
    assert isinstance(backend, LocalBackend) and backend.threads == 3
    assert isinstance(backend, EvalBackend)
    assert not isinstance(backend, ArrayBackend)  # one submit per part


def test_slurm_backend_declares_job_arrays() -> None:
    # Checked on the class: building one needs submitit and a SLURM folder, not the point here.
    assert callable(SlurmBackend.submit_array)
    assert not hasattr(LocalBackend, "submit_array")


class ScriptedBackend:
    """A backend from outside the package: one module, one registration."""

    name = "scripted"

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.arrays: list[int] = []

    @classmethod
    def from_spec(cls, spec: Any, rundir: RunDir) -> Self:
        return cls(int(spec.evaluation.cpus_per_task))

    def submit(self, job: EvalPart, log_path: Path) -> str:
        return self.submit_array([(job, log_path)])[0]

    def submit_array(self, parts: list[tuple[EvalPart, Path]]) -> list[str]:
        self.arrays.append(len(parts))
        return [f"s{i}" for i in range(len(parts))]

    def poll(self) -> dict[str, Any]:
        return {}

    def running(self) -> set[str]:
        return set()

    def cancel(self, job_id: str) -> None: ...

    def close(self) -> None: ...


def test_a_registered_backend_is_built_by_name(
    run: tuple[Any, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_base, "_BACKENDS", dict(backend_base._BACKENDS))
    register_backend("scripted")(ScriptedBackend)
    spec, rundir = run
    backend = make_backend(spec, rundir, "scripted")
    assert isinstance(backend, ScriptedBackend) and backend.threads == 1
    assert isinstance(backend, ArrayBackend)
    assert "scripted" in known_backends()


def test_backend_registration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_base, "_BACKENDS", dict(backend_base._BACKENDS))
    with pytest.raises(TypeError, match="registered as 'other'"):
        register_backend("other")(ScriptedBackend)
    renamed = type("LocalBackend2", (ScriptedBackend,), {"name": "local"})
    with pytest.raises(ValueError, match="'local' is already registered"):
        register_backend("local")(renamed)
    register_backend("local")(LocalBackend)  # the same class again (a re-import) is fine


# --------------------------------------------------------------------------- trackers


def test_builtin_trackers_are_registered() -> None:
    assert {"memory", "null", "wandb"} <= set(known_trackers())


def test_disabled_tracking_is_the_null_tracker(run: tuple[Any, RunDir]) -> None:
    spec, rundir = run
    tracker = make_tracker(with_updates(spec, "tracking", mode="disabled"), rundir)
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    assert not isinstance(tracker, DurableTracker)


def test_unknown_tracker_lists_the_known_ones(run: tuple[Any, RunDir]) -> None:
    spec, rundir = run
    with pytest.raises(SpecError, match=r"unknown tracker 'wandbb'; did you mean 'wandb'\?"):
        make_tracker(spec, rundir, "wandbb")


def test_a_registered_tracker_is_built_by_name(
    run: tuple[Any, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracker_base, "_TRACKERS", dict(tracker_base._TRACKERS))

    @register_tracker("recording")
    class Recording(MemoryTracker):
        pass

    spec, rundir = run
    assert isinstance(make_tracker(spec, rundir, "recording"), Recording)


def test_offline_tracking_is_wandb_with_durable_state(
    run: tuple[Any, RunDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, rundir = run
    home = rundir.path.parent / "wandb-home"
    monkeypatch.setenv("WANDB_DIR", str(home))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    tracker = make_tracker(with_updates(spec, "tracking", mode="offline"), rundir)
    try:
        assert isinstance(tracker, WandbTracker) and isinstance(tracker, DurableTracker)
        assert tracker.durable is not None and tracker.durable.train_step == 0
    finally:
        tracker.finish(0)

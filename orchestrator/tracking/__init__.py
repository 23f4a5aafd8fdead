"""Experiment tracking. Only the controller process writes to a tracker.

`WandbTracker` imports wandb when one is created; importing this package does not.
`make_tracker` builds the tracker a job spec asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.tracking.base import (
    CompositeTracker,
    DurableTracker,
    LoggedState,
    MemoryTracker,
    NullTracker,
    Tracker,
    get_tracker_class,
    known_trackers,
    register_tracker,
)
from orchestrator.tracking.wandb_file import (
    WandbFileError,
    WandbOfflineRun,
    find_offline_runs,
    read_offline_run,
)
from orchestrator.tracking.wandb_tracker import WandbTracker, wandb_run_id

if TYPE_CHECKING:
    from orchestrator.contract.layout import RunDir
    from orchestrator.contract.spec import JobSpec


def tracker_name(spec: JobSpec) -> str:
    """The tracker a spec asks for: ``tracking.mode = "disabled"`` is the null tracker,
    "offline" and "online" are wandb's modes."""
    return "null" if spec.tracking.mode == "disabled" else "wandb"


def make_tracker(spec: JobSpec, rundir: RunDir, name: str | None = None) -> Tracker:
    """The tracker ``name`` (default: the one the spec asks for) of run ``rundir``; an
    unknown name is a SpecError listing the known ones."""
    return get_tracker_class(name or tracker_name(spec)).from_spec(spec, rundir)


__all__ = [
    "CompositeTracker",
    "DurableTracker",
    "LoggedState",
    "MemoryTracker",
    "NullTracker",
    "Tracker",
    "WandbFileError",
    "WandbOfflineRun",
    "WandbTracker",
    "find_offline_runs",
    "get_tracker_class",
    "known_trackers",
    "make_tracker",
    "read_offline_run",
    "register_tracker",
    "tracker_name",
    "wandb_run_id",
]

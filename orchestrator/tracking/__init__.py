"""Experiment tracking. Only the controller process writes to a tracker.

`WandbTracker` imports wandb when one is created; importing this package does not.
"""

from orchestrator.tracking.base import (
    CompositeTracker,
    DurableTracker,
    LoggedState,
    MemoryTracker,
    NullTracker,
    Tracker,
)
from orchestrator.tracking.wandb_file import (
    WandbFileError,
    WandbOfflineRun,
    find_offline_runs,
    read_offline_run,
)
from orchestrator.tracking.wandb_tracker import WandbTracker, wandb_run_id

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
    "read_offline_run",
    "wandb_run_id",
]

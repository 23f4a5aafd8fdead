"""The exit codes of `orch` and of the controller, named once. The SLURM batch script and the
Ray job wrapper act on them (3: requeue), so they are part of the contract."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """The run finished: every checkpoint evaluated, the final eval merged."""
    FAILED = 1
    """Training failed, an eval part failed for good, or doctor found an error."""
    USAGE = 2
    """Bad input (spec, data, run directory, cluster): nothing was spent; the message says
    what to fix."""
    PREEMPTED = 3
    """Training checkpointed on a preemption request; a requeue resumes the run."""
    INTERRUPTED = 130
    """Ctrl-C."""

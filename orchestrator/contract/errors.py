"""Errors a user can see. Each message says what and where, and how to fix it."""


class OrchError(Exception):
    """Base of every error orch reports to a user (exit code 2 from the CLI)."""


class SpecError(OrchError):
    """The job spec (TOML or --set overrides) is invalid."""


class DataError(OrchError):
    """A manifest, label file or image is invalid; the message names the file and line."""


class RunDirError(OrchError):
    """The run directory is missing, foreign or inconsistent."""


class ClusterError(OrchError):
    """A cluster (Ray head, SLURM controller) cannot be reached or refused a request."""

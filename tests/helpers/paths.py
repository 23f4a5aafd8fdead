"""Where the repository is, and the environment a subprocess needs to import it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def repo_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with the repository on PYTHONPATH, so a
    child ``python -m orchestrator.cli`` or a script imports this checkout."""
    return {**(os.environ if base is None else base), "PYTHONPATH": str(ROOT), **extra}

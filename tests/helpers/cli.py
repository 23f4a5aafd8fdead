"""The orch CLI run as users run it: a subprocess of this checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import repo_env


def orch(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator.cli ARGS`` in ``cwd``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=repo_env(),
    )


def orch_popen(*args: str, cwd: Path, new_session: bool = False) -> subprocess.Popen[str]:
    """The same, started in the background; stdout and stderr merged into one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=repo_env(),
        start_new_session=new_session,
    )


def only_run(tmp_path: Path) -> Path:
    """The single run directory under ``tmp_path/runs``."""
    runs = [p for p in (tmp_path / "runs").iterdir() if (p / "spec.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]

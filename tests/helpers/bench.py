"""Running a benchmark as `make bench` does and reading its ``name=value`` figures."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT, repo_env

VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY if VENV_PY.is_file() else sys.executable)


def run_bench(script: str, *args: str, timeout: float = 850) -> subprocess.CompletedProcess[str]:
    """Run one benchmark as `make bench` does; ``timeout`` stays under pytest's 900 s."""
    return subprocess.run(
        [PY, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=repo_env(WANDB_MODE="offline", WANDB_SILENT="true"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def figures(stdout: str) -> dict[str, str]:
    """The ``name=value`` lines of a benchmark's output (the first ``=`` splits)."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name and " " not in name:
            out[name] = value.strip()
    return out


def check_numbers(proc: subprocess.CompletedProcess[str], names: list[str]) -> dict[str, float]:
    """The named figures as finite floats; a failure naming what is missing or not a number."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    found = figures(proc.stdout)
    missing = [n for n in names if n not in found]
    assert not missing, f"missing figures {missing} in:\n{proc.stdout}"
    values: dict[str, float] = {}
    for name in names:
        try:
            values[name] = float(found[name])
        except ValueError:
            pytest.fail(f"{name}={found[name]!r} is not a number")
        assert math.isfinite(values[name]), f"{name}={found[name]}"
    return values

"""Starting the embedded Ray survives a loaded machine: Ray 2.60 gives its raylet a hard-coded
30 s to register, which a machine under load can exceed. The slow start cannot be made to
happen on demand, so ray.init is scripted here: what is checked is orch's reaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.launch import submit


class ScriptedInit:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0
        self.shutdowns = 0

    def init(self, **kwargs: Any) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "context"

    def shutdown(self) -> None:
        self.shutdowns += 1


TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)


def scripted(monkeypatch: pytest.MonkeyPatch, failures: list[Exception]) -> ScriptedInit:
    import ray

    fake = ScriptedInit(failures)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    return fake


def test_a_startup_timeout_is_retried_after_a_shutdown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = scripted(monkeypatch, [TIMEOUT])
    assert submit.init_embedded_ray(4, dashboard=False) == "context"
    assert (fake.calls, fake.shutdowns) == (2, 1)
    assert "did not start within Ray's 30 s (attempt 1 of 3" in caplog.text


def test_other_errors_and_the_last_timeout_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted(monkeypatch, [ValueError("bad num_cpus")])
    with pytest.raises(ValueError, match="bad num_cpus"):
        submit.init_embedded_ray(4, dashboard=False)
    assert fake.calls == 1
    fake = scripted(monkeypatch, [TIMEOUT] * submit.RAY_START_ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        submit.init_embedded_ray(4, dashboard=False)
    assert fake.calls == submit.RAY_START_ATTEMPTS


def test_a_sigterm_after_ray_started_asks_for_a_preemption(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """An embedded Ray started as `orch submit` starts it (ray.init puts in its own SIGTERM
    handler, which exits): a SIGTERM then writes the run's preemption request, as SLURM's
    signal does, and the controller goes on to stop training at a checkpoint."""
    import subprocess
    import sys

    from tests.helpers.jobs import demo_job
    from tests.helpers.paths import ROOT, repo_env

    job = demo_job(tmp_path, demo_data, tiny_model)
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "import ray\n"
        "from orchestrator.contract.spec import load_spec\n"
        "from orchestrator.launch.submit import start_ray_keeping_handlers\n"
        "request = Path(sys.argv[2])\n"
        "start_ray_keeping_handlers(load_spec(Path(sys.argv[1])), False, request)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.5)\n"
        "print('still here:', request.read_text().strip())\n"
        "ray.shutdown()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(job), str(tmp_path / "control" / "preempt")],
        cwd=ROOT, env=repo_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("still here: SIGTERM"), proc.stdout

"""Starting the embedded Ray survives a loaded machine: Ray 2.60 gives its raylet a hard-coded
30 s to register, which a machine under load can exceed. The slow start cannot be made to
happen on demand, so ray.init is scripted here: what is checked is orch's reaction."""

from __future__ import annotations

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

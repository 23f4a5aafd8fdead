"""Every backend runs the same worker: the same part gives the same result file, whichever
backend ran it. Real subprocesses and a real (embedded) Ray, not mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.eval_backends.base import Failed, Outcome, Succeeded
from orchestrator.eval_backends.local import LocalBackend
from tests.helpers.evals import comparable, wait
from tests.helpers.jobs import eval_part
from tests.helpers.waiting import wait_for


@pytest.mark.slow  # an embedded Ray and two eval workers: ~30 s
def test_local_and_ray_backends_write_identical_results(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    import ray

    from orchestrator.eval_backends.ray_tasks import RayBackend
    from orchestrator.launch.submit import init_embedded_ray

    local = LocalBackend()
    out_local = tmp_path / "local" / "faces.json"
    outcome = wait(
        local,
        local.submit(
            eval_part(checkpoint, demo_data, out_local, backend="local"), tmp_path / "local.log"
        ),
    )
    assert outcome == Succeeded(out_local)

    init_embedded_ray(2, dashboard=False)  # tried again if a loaded machine starts it slowly
    try:
        backend = RayBackend(1.0)
        out_ray = tmp_path / "ray" / "faces.json"
        outcome = wait(
            backend,
            backend.submit(
                eval_part(checkpoint, demo_data, out_ray, backend="ray"), tmp_path / "ray.log"
            ),
        )
        assert outcome == Succeeded(out_ray)
        failing = eval_part(
            checkpoint, demo_data, tmp_path / "x.json", manifest=tmp_path / "no.jsonl"
        )
        outcome = wait(backend, backend.submit(failing, tmp_path / "fail.log"))
        assert isinstance(outcome, Failed) and "manifest not found" in outcome.reason

        # evaluation.group_parts: a checkpoint's parts in one task, one model load, one outcome
        # per part; the bad one fails alone.
        backend.group_parts = True
        grouped = [
            (eval_part(checkpoint, demo_data, tmp_path / "g" / "faces.json", backend="ray"),
             tmp_path / "g" / "faces.log"),
            (eval_part(checkpoint, demo_data, tmp_path / "g" / "x.json", backend="ray",
                       manifest=tmp_path / "no.jsonl", dataset="broken"),
             tmp_path / "g" / "broken.log"),
            (eval_part(checkpoint, demo_data, tmp_path / "g" / "all.json", backend="ray",
                       eval_ratio=1.0),
             tmp_path / "g" / "all.log"),
        ]  # fmt: skip
        ids = backend.submit_array(grouped)
        assert len(set(ids)) == 3 and len({i.split(":")[0] for i in ids}) == 1  # one task
        outcomes: dict[str, Outcome] = {}  # one poll may end every part of the group

        def all_ended() -> bool:
            outcomes.update(backend.poll())
            return len(outcomes) == len(ids)

        wait_for(all_ended, 300, "the grouped parts", interval=0.1)
    finally:
        ray.shutdown()
    assert outcomes[ids[0]] == Succeeded(tmp_path / "g" / "faces.json")
    failed = outcomes[ids[1]]
    assert isinstance(failed, Failed) and "manifest not found" in failed.reason
    assert outcomes[ids[2]] == Succeeded(tmp_path / "g" / "all.json")
    assert comparable(tmp_path / "g" / "faces.json") == comparable(out_ray)  # same numbers
    assert json.loads((tmp_path / "g" / "all.json").read_text())["n"] == 60
    assert "one model load" in (tmp_path / "g" / "all.log").read_text()
    assert json.loads((tmp_path / "g" / "all.json").read_text())["timings"]["load_s"] == 0.0
    a, b = comparable(out_local), comparable(out_ray)
    assert a == b
    assert a["n"] == 30 and a["partial"] is True  # eval_ratio 0.5 of 60, stratified
    assert json.loads(out_ray.read_text())["backend"] == "ray"


def test_local_backend_reports_a_failure_with_its_log(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    local = LocalBackend()
    bad = eval_part(checkpoint, demo_data, tmp_path / "x.json", manifest=tmp_path / "no.jsonl")
    outcome = wait(local, local.submit(bad, tmp_path / "bad.log"))
    assert isinstance(outcome, Failed)
    assert "exit code 1" in outcome.reason and "manifest not found" in outcome.reason
    assert not (tmp_path / "x.json").exists()

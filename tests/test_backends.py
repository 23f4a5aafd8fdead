"""Every backend runs the same worker: the same part gives the same result file, whichever
backend ran it. Real subprocesses and a real (embedded) Ray, not mocks."""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.contract.evalpart import EvalPart
from orchestrator.eval_backends.base import EvalBackend, Failed, Outcome, Succeeded
from orchestrator.eval_backends.local import LocalBackend


def job(
    checkpoint: Path, demo_data: Path, out: Path, manifest: Path | None = None, **kw: object
) -> EvalPart:
    faces = {
        "kind": "classification", "train": str(demo_data / "faces" / "train.jsonl"),
        "eval": str(manifest or demo_data / "faces" / "test.jsonl"), "num_classes": 2,
    }  # fmt: skip
    model = {"path": str(checkpoint), "prompt": "what is in the image ?", "min_pixels": 3136,
             "max_pixels": 3136, "attn_implementation": "sdpa"}  # fmt: skip
    base = dict(
        step=10, dataset="faces", kind="classification", checkpoint=str(checkpoint),
        dataset_spec=faces, model_spec=model, eval_ratio=0.5, partial=True, seed=0,
        batch_size=16, out=str(out), metrics=["accuracy", "loss", "top5_accuracy"],
    )  # fmt: skip
    return EvalPart(**(base | kw))  # type: ignore[arg-type]


def wait(backend: EvalBackend, job_id: str, timeout: float = 120) -> Outcome:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = backend.poll()
        if job_id in done:
            return done[job_id]
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish in {timeout} s")


def comparable(path: Path) -> dict[str, object]:
    result = json.loads(path.read_text())
    for key in ("timings", "backend", "checkpoint"):
        result.pop(key)
    return result


def test_local_and_ray_backends_write_identical_results(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    import ray

    from orchestrator.eval_backends.ray_tasks import RayBackend

    local = LocalBackend()
    out_local = tmp_path / "local" / "faces.json"
    outcome = wait(
        local,
        local.submit(
            job(checkpoint, demo_data, out_local, backend="local"), tmp_path / "local.log"
        ),
    )
    assert outcome == Succeeded(out_local)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        backend = RayBackend(1.0)
        out_ray = tmp_path / "ray" / "faces.json"
        outcome = wait(
            backend,
            backend.submit(
                job(checkpoint, demo_data, out_ray, backend="ray"), tmp_path / "ray.log"
            ),
        )
        assert outcome == Succeeded(out_ray)
        failing = job(
            checkpoint, demo_data, tmp_path / "x.json", manifest=tmp_path / "no.jsonl"
        )
        outcome = wait(backend, backend.submit(failing, tmp_path / "fail.log"))
        assert isinstance(outcome, Failed) and "manifest not found" in outcome.reason
    finally:
        ray.shutdown()
    a, b = comparable(out_local), comparable(out_ray)
    assert a == b
    assert a["n"] == 30 and a["partial"] is True  # eval_ratio 0.5 of 60, stratified
    assert json.loads(out_ray.read_text())["backend"] == "ray"


def test_local_backend_reports_a_failure_with_its_log(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    local = LocalBackend()
    bad = job(checkpoint, demo_data, tmp_path / "x.json", manifest=tmp_path / "no.jsonl")
    outcome = wait(local, local.submit(bad, tmp_path / "bad.log"))
    assert isinstance(outcome, Failed)
    assert "exit code 1" in outcome.reason and "manifest not found" in outcome.reason
    assert not (tmp_path / "x.json").exists()

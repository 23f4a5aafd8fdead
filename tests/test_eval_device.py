"""An eval part runs on the hardware its backend gave it: CUDA when it holds a GPU
(evaluation.gpus_per_part), else the CPU, even on a machine whose GPUs training holds; the dtype
comes from evaluation.dtype ("auto": bf16 on a GPU, fp32 on the CPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.contract.errors import SpecError
from orchestrator.contract.evalpart import eval_part as build_part
from orchestrator.contract.spec import validate_spec
from tests.helpers.jobs import eval_part
from workers.evaluate import dtype_for, eval_device, run_eval, run_evals


def spec(tmp_path: Path, **evaluation: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "runs_dir": str(tmp_path),
        "model": {"path": str(tmp_path / "m")},
        "datasets": {"a": {"train": "x", "eval": "x", "num_classes": 2}},
        "training": {"max_steps": 3},
        "evaluation": evaluation,
    }


def test_a_part_without_a_gpu_runs_on_the_cpu_even_where_cuda_is_visible(
    tmp_path: Path, checkpoint: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # training's GPUs, say
    part = eval_part(checkpoint, demo_data, tmp_path / "r.json")
    assert part.gpus == 0.0
    assert eval_device(part) == torch.device("cpu")


def test_a_part_given_a_gpu_without_cuda_says_what_is_wrong(
    tmp_path: Path, checkpoint: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    part = eval_part(checkpoint, demo_data, tmp_path / "r.json", gpus=1.0)
    with pytest.raises(RuntimeError, match=r"given 1 GPU\(s\).*CUDA is not available"):
        eval_device(part)


def test_dtype_follows_the_device_unless_the_spec_names_one() -> None:
    assert dtype_for(torch.device("cpu")) == torch.float32
    assert dtype_for(torch.device("cuda")) == torch.bfloat16
    assert dtype_for(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert dtype_for(torch.device("cuda"), "float32") == torch.float32


def test_the_spec_carries_gpus_and_dtype_into_every_part(tmp_path: Path) -> None:
    s = validate_spec(spec(tmp_path, gpus_per_part=0.5, dtype="float16"))
    part = build_part(
        s, "a", step=1, checkpoint="c", full=False, out="o", backend="ray"
    )  # the controller's builder
    assert (part.gpus, part.dtype) == (0.5, "float16")
    assert json.loads(json.dumps(part.to_json()))["gpus"] == 0.5


def test_gpus_need_a_backend_that_accounts_for_them(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"gpus_per_part > 0 needs a backend.*local"):
        validate_spec(spec(tmp_path, backend="local", gpus_per_part=1))
    with pytest.raises(SpecError, match=r"slurm\.gpus_per_task is now evaluation\.gpus_per_part"):
        validate_spec(spec(tmp_path, slurm={"gpus_per_task": 1}))


def test_a_cpu_part_in_bf16_records_its_device_and_dtype(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    fp32 = run_eval(eval_part(checkpoint, demo_data, tmp_path / "fp32.json"))
    bf16 = run_eval(eval_part(checkpoint, demo_data, tmp_path / "bf16.json", dtype="bfloat16"))
    assert fp32["device"] == {"type": "cpu", "dtype": "float32"}
    assert bf16["device"] == {"type": "cpu", "dtype": "bfloat16"}
    assert bf16["n"] == fp32["n"] == 30
    # Same model, lower precision: close to the fp32 loss, not equal to it.
    assert bf16["metrics"]["loss"] == pytest.approx(fp32["metrics"]["loss"], rel=0.05)


def test_grouped_parts_share_one_load_and_fail_alone(
    tmp_path: Path, checkpoint: Path, demo_data: Path
) -> None:
    good = eval_part(checkpoint, demo_data, tmp_path / "a.json")
    bad = eval_part(checkpoint, demo_data, tmp_path / "b.json", manifest=tmp_path / "none.jsonl")
    full = eval_part(checkpoint, demo_data, tmp_path / "c.json", eval_ratio=1.0)
    results = run_evals([good, bad, full])
    assert isinstance(results[1], Exception) and "manifest not found" in str(results[1])
    first, third = results[0], results[2]
    assert isinstance(first, dict) and isinstance(third, dict)
    assert (first["n"], third["n"]) == (30, 60)
    assert first["timings"]["load_s"] > 0.0 and third["timings"]["load_s"] == 0.0
    alone = run_eval(dataclasses.replace(good, out=str(tmp_path / "alone.json")))
    assert alone["metrics"] == first["metrics"]
    other = dataclasses.replace(good, checkpoint=str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="must share checkpoint"):
        run_evals([good, other])

"""Every benchmark's quick mode runs to its end and prints the figures it promises.

Each benchmark runs as `make bench` runs it (the venv's python, PYTHONPATH at the repository
root), with ``--quick`` (eval_latency measures the session's demo run instead of submitting one
of its own). Only the figure names and that their values are numbers are checked: never a speed
(the machine may be shared).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.bench import PY, check_numbers, figures, run_bench
from tests.helpers.runs import DemoRun, MeasuredPlan, job_by_role

pytestmark = pytest.mark.slow


def test_controller_quick() -> None:
    proc = run_bench("controller_1000x50.py", "--quick")
    check_numbers(proc, ["controller_20x5_s", "read_parts_baseline_s", "controller_vs_read_ratio"])


def test_eval_latency_on_the_session_demo_run(demo_run: DemoRun) -> None:
    """The figures of a real run of the demo job (the session's: 120 steps, three checkpoints),
    measured as --quick measures the run it submits (make bench-quick runs that one)."""
    proc = run_bench("eval_latency.py", "--run", str(demo_run.run))
    values = check_numbers(
        proc,
        [
            "checkpoints",
            "ckpt_to_logged_s",
            "ckpt_to_logged_max_s",
            "eval_compute_s",
            "ckpt_to_logged_vs_compute_ratio",
            "eval_block_s",
            "training_s",
            "eval_block_fraction",
        ],
    )
    assert values["eval_compute_s"] > 0 and values["training_s"] > 0
    assert values["checkpoints"] == 3


def test_eval_grouping_quick(demo_data: Path, tiny_model: Path) -> None:
    proc = run_bench(
        "eval_grouping.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    values = check_numbers(
        proc,
        [
            "eval_parts_per_checkpoint",
            "eval_load_s_grouped",
            "eval_load_s_per_part",
            "eval_load_grouped_vs_per_part",
            "eval_total_s_grouped",
            "eval_total_s_per_part",
            "eval_total_grouped_vs_per_part",
        ],
    )
    assert values["eval_parts_per_checkpoint"] == 2
    assert values["eval_load_s_grouped"] > 0 and values["eval_load_s_per_part"] > 0


def test_ckpt_block_quick(demo_data: Path, tiny_model: Path) -> None:
    """Two trainings of the demo job, synchronous and asynchronous checkpoints, four checkpoints
    each, one rank each without Ray: every figure, read from their checkpoint events."""
    proc = run_bench(
        "ckpt_block.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    names = ["steps", "checkpoints_per_run", "runs_per_side", "ranks", "hf_weights_mb"]
    for side in ("sync", "async"):
        names += [f"{figure}_{side}" for figure in ("ckpt_block_s", "deepspeed_s", "snapshot_s")]
        names += [f"{figure}_{side}" for figure in ("hf_export_s", "hf_block_s", "total_s")]
        names += [f"ckpt_block_max_s_{side}", f"training_s_{side}"]
    names += ["ckpt_block_async_vs_sync", "training_async_vs_sync"]
    values = check_numbers(proc, names)
    assert values["checkpoints_per_run"] == 4 and values["runs_per_side"] == 1
    assert values["ranks"] == 1
    assert values["ckpt_block_s_sync"] > 0 and values["ckpt_block_s_async"] > 0
    assert values["snapshot_s_sync"] == 0 and values["hf_export_s_async"] > 0


def test_loader_vs_decode_quick() -> None:
    proc = run_bench("loader_vs_decode.py", "--quick")
    values = check_numbers(
        proc,
        [
            "loader_images",
            "decode_images_per_s",
            "loader_images_per_s",
            "loader_vs_decode",
            "encode_without_early_shrink_images_per_s",
            "encode_without_early_shrink_vs_decode",
        ],
    )
    assert values["loader_images"] == 128


def test_packing_quick() -> None:
    proc = run_bench("packing.py", "--quick")
    values = check_numbers(
        proc,
        [
            "packing_samples",
            "packing_oversize_excluded",
            "packing_mean_sample_tokens",
            "packing_buffer_samples_orch",
            "packing_buffer_tokens_nanovlm",
            "packing_fill",
            "packing_fill_nanovlm",
            "packing_fill_gain_points",
            "packing_fill_same_buffer",
            "packing_images_per_pack",
            "packing_samples_per_s",
        ],
    )
    assert values["packing_samples"] + values["packing_oversize_excluded"] == 5_000
    assert 0 < values["packing_fill"] <= 1 and 0 < values["packing_fill_nanovlm"] <= 1


def test_stream_rss_quick() -> None:
    proc = run_bench("stream_rss.py", "--quick")
    values = check_numbers(
        proc,
        [
            "stream_rows",
            "stream_write_s",
            "stream_rss_mb",
            "stream_rss_mb_parquet",
            "stream_rss_mb_jsonl",
            "stream_rss_mb_baseline",
            "stream_rss_over_baseline",
            "stream_rows_per_s_parquet",
            "stream_rows_per_s_jsonl",
        ],
    )
    assert values["stream_rows"] == 200_000


def test_orch_vs_handwritten_quick(demo_data: Path, tiny_model: Path) -> None:
    proc = run_bench(
        "orch_vs_handwritten.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    names = ["cpus", "load_avg_1m_start", "load_avg_1m_end", "runs_per_side", "workers", "steps"]
    names += ["steady_steps"]
    for figure in (
        "per_step_s",
        "fixed_s",
        "to_ready_s",
        "warmup_excess_s",
        "after_last_step_s",
        "checkpoint_s",
        "wall_s",
        "cpu_per_step_s",
        "worker_cpu_per_step_s",
        "driver_cpu_per_step_s",
        "other_cpu_per_step_s",
        "to_ready_cpu_s",
        "fixed_cpu_s",
        "fixed_worker_cpu_s",
        "fixed_driver_cpu_s",
        "fixed_other_cpu_s",
    ):
        for side in ("orch", "handwritten"):
            names += [f"{side}_{figure}{stat}" for stat in ("", "_min", "_max")]
    ratios = ("per_step", "fixed", "wall", "cpu_per_step", "fixed_cpu")
    names += [f"orch_vs_handwritten_{f}" for f in ratios]
    values = check_numbers(proc, names)
    assert values["runs_per_side"] == 1 and values["steps"] == 20 and values["workers"] == 1
    assert values["orch_per_step_s"] > 0 and values["handwritten_per_step_s"] > 0
    assert (
        values["orch_worker_cpu_per_step_s"] > 0 and values["handwritten_worker_cpu_per_step_s"] > 0
    )


def cuda_available() -> bool:
    probe = "import sys, torch; sys.exit(not torch.cuda.is_available())"
    return subprocess.run([PY, "-c", probe], capture_output=True).returncode == 0


def test_gpu_mfu_without_cuda_says_so() -> None:
    if cuda_available():
        pytest.skip("a CUDA device is present: the full run is `make bench`'s")
    proc = run_bench("gpu_mfu.py")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no CUDA device" in proc.stderr
    assert "gpu_mfu=" not in proc.stdout


def test_gpu_mfu_quick() -> None:
    """On the CPU without CUDA (fp32, no MFU lines: no peak is known), on the GPU with it."""
    cuda = cuda_available()
    proc = run_bench("gpu_mfu.py", "--quick")
    names = [
        "params",
        "matmul_tflops_per_s",
        "cls_step_s",
        "cls_seq_len",
        "cls_tflops_per_s",
        "cls_vs_matmul",
        "gpu_tokens_per_s",
        "cls_vision_flops_share",
        "vqa_step_s",
        "vqa_tflops_per_s",
        "vqa_vs_matmul",
        "gpu_vqa_tokens_per_s",
        "vqa_text_tokens",
    ]
    if cuda:
        names += ["cls_peak_mem_gb", "vqa_peak_mem_gb"]
    values = check_numbers(proc, names)
    assert 0 < values["cls_vision_flops_share"] < 1
    found = figures(proc.stdout)
    if not cuda:
        assert found["device"] == "cpu"
        assert "gpu_mfu" not in found and "matmul_baseline_mfu" not in found
    elif "gpu_mfu" in found:  # a device whose bf16 peak workers/flops.py knows
        check_numbers(proc, ["gpu_mfu", "gpu_vqa_mfu", "matmul_baseline_mfu"])


def test_plan_error_on_the_session_plan_and_demo_run(
    tmp_path: Path, measured_plan: MeasuredPlan, demo_run: DemoRun
) -> None:
    """The comparison of a plan with its job's real run, on the session's plan of the demo job
    (conftest: `orch plan --measure 2`) and the session's run of that job (`--given`; --quick
    runs both itself, as make bench-quick does)."""
    assert job_by_role(measured_plan.job, measured_plan.inputs) == job_by_role(
        demo_run.job, demo_run.inputs
    )  # the same job, whichever workers made the two
    given = tmp_path / "given.json"
    given.write_text(json.dumps({
        "plan": measured_plan.plan, "plan_s": measured_plan.plan_s, "run": str(demo_run.run),
        "launched": demo_run.launched, "exited": demo_run.exited,
    }))  # fmt: skip
    proc = run_bench("plan_error.py", "--given", str(given))
    names = ["steps", "checkpoints", "measure_steps", "plan_s", "plan_vs_run_wall", "plan_error"]
    names += ["cpus", "load_avg_1m_end"]
    for name in ("checkpoint_s", "ckpt_eval_s", "ckpt_eval_warm_s", "final_eval_s"):
        names.append(f"measured_{name}")
    for name in ("wall", "startup", "step", "train", "after_training"):
        names += [f"predicted_{name}_s", f"real_{name}_s", f"{name}_predicted_vs_real"]
    values = check_numbers(proc, names)
    assert values["steps"] == 120 and values["checkpoints"] == 3 and values["measure_steps"] == 2
    assert values["plan_error"] > 0 and values["predicted_wall_s"] > values["predicted_train_s"]
    real_wall = demo_run.exited - demo_run.launched
    assert values["real_wall_s"] == pytest.approx(real_wall, abs=1e-3)
    assert values["plan_error"] == pytest.approx(
        measured_plan.plan["prediction"]["wall_s"] / real_wall, abs=2e-3
    )

"""bench/orch_eval_vs_lmms.py's quick mode runs to its end against lmms-eval (.venv-lmms, `make
lmms`) and prints the figures it promises; without that venv it says so and exits 2.

As in tests/test_bench.py, only the figure names, that their values are numbers and the counts
both sides agree on are checked: never a speed (the machine may be shared).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bench import check_numbers, run_bench
from tests.helpers.paths import ROOT

LMMS_PY = ROOT / ".venv-lmms" / "bin" / "python"

pytestmark = pytest.mark.slow


SAMPLES_PER_S = (
    "orch_eval_samples_per_s",
    "lmms_eval_samples_per_s",
    "lmms_generate_until_samples_per_s",
    "orch_generate_samples_per_s",
    "lmms_generate_samples_per_s",
)
RATIOS = (
    "orch_eval_vs_lmms",
    "orch_eval_vs_lmms_cpu",
    "orch_eval_vs_lmms_generate_until",
    "orch_generate_vs_lmms",
)
SECONDS = (
    "orch_load_s",
    "orch_eval_s",
    "orch_eval_cpu_s",
    "orch_generate_s",
    "orch_loss_forward_s",
    "lmms_import_s",
    "lmms_load_s",
    "lmms_process_wall_s",
    "lmms_eval_s",
    "lmms_eval_cpu_s",
    "lmms_generate_until_s",
    "lmms_generate_s",
)
COUNTS = (
    "samples",
    "batch_size",
    "max_new_tokens",
    "image_side",
    "rounds",
    "orch_samples",
    "lmms_samples",
    "orch_new_tokens_per_sample",
    "lmms_new_tokens_per_sample",
    "orch_prompt_tokens_per_sample",
    "lmms_prompt_tokens_per_sample",
)


def test_orch_eval_vs_lmms_quick(demo_data: Path, tiny_model: Path) -> None:
    if not LMMS_PY.is_file():
        pytest.skip(f"{LMMS_PY} is missing: `make lmms` builds lmms-eval's venv")
    proc = run_bench(
        "orch_eval_vs_lmms.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    values = check_numbers(proc, [*SAMPLES_PER_S, *RATIOS, *SECONDS, *COUNTS])
    for name in (*SAMPLES_PER_S, *RATIOS, "orch_eval_s", "lmms_eval_s"):
        assert values[name] > 0, f"{name}={values[name]}"
    assert values["samples"] == 16 and values["batch_size"] == 8 and values["rounds"] == 1
    assert values["orch_samples"] == values["lmms_samples"] == values["samples"]
    # min_new_tokens = max_new_tokens in the checkpoint's generation config: the same work.
    assert values["orch_new_tokens_per_sample"] == values["max_new_tokens"] == 4
    assert values["lmms_new_tokens_per_sample"] == values["max_new_tokens"]
    assert values["orch_prompt_tokens_per_sample"] == values["lmms_prompt_tokens_per_sample"]


def test_orch_eval_vs_lmms_without_lmms_venv_says_so(tmp_path: Path) -> None:
    proc = run_bench("orch_eval_vs_lmms.py", "--quick", "--lmms-python", str(tmp_path / "none"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "make lmms" in proc.stderr
    assert "orch_eval_vs_lmms=" not in proc.stdout


def test_lmms_part_overhead_quick(demo_data: Path, tiny_model: Path) -> None:
    from tests.helpers.lmms import require_lmms

    require_lmms()
    proc = run_bench(
        "lmms_part_overhead.py", "--quick", "--demo", str(demo_data), "--model", str(tiny_model)
    )
    names = ["lmms_cli_s", "orch_part_s", "orch_part_vs_cli", "orch_part_overhead_s",
             "lmms_import_s", "lmms_load_s", "lmms_evaluate_s", "lmms_documents"]  # fmt: skip
    values = check_numbers(proc, names)
    assert values["lmms_documents"] == 4
    for name in ("lmms_cli_s", "orch_part_s", "lmms_evaluate_s"):
        assert values[name] > 0, f"{name}={values[name]}"

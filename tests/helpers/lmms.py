"""lmms-eval in the tests: its environment (``make lmms``) and the test tasks of
tests/lmms_tasks, rendered over rows made from the session's demo data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers.paths import ROOT

LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"
TASKS = ROOT / "tests" / "lmms_tasks"


def make_lmms_tasks(demo: Path, out: Path, n: int = 8) -> Path:
    """The test tasks over ``n`` easy-VQA and ``n`` digits rows of ``demo``: data under
    ``out/data``, task YAMLs (``@DATA@`` filled in) and hooks under ``out/tasks``, returned."""
    data, tasks = out / "data", out / "tasks"
    data.mkdir(parents=True, exist_ok=True)
    tasks.mkdir(parents=True, exist_ok=True)
    vqa = [json.loads(x) for x in (demo / "easyvqa" / "test.jsonl").read_text().splitlines()][:n]
    rows = [
        {
            "id": r["id"],
            "question": r["texts"][0]["user"],
            "answer": r["texts"][-1]["assistant"],
            "image": str(demo / r["images"][0]),
        }
        for r in vqa
    ]
    (data / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mcq = [json.loads(x) for x in (demo / "mcq_digits" / "test.jsonl").read_text().splitlines()]
    rows = [
        {
            "id": r["id"],
            "question": r["question"],
            "choices": r["options"],
            "answer": r["answer"],
            "image": str(demo / r["images"][0]),
        }
        for r in mcq[:n]
    ]
    (data / "mcq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for src in TASKS.iterdir():
        if src.suffix == ".yaml":
            (tasks / src.name).write_text(src.read_text().replace("@DATA@", str(data)))
        elif src.suffix == ".py":
            shutil.copyfile(src, tasks / src.name)
    return tasks


def require_lmms() -> Path:
    """The lmms-eval environment's Python. Without it (no `make lmms`), the test skips, or fails
    where ``ORCH_REQUIRE_LMMS=1`` (`make test`, which builds it)."""
    import os

    import pytest

    if LMMS_PYTHON.is_file():
        return LMMS_PYTHON
    why = f"no lmms-eval environment at {LMMS_PYTHON}: `make lmms` builds it"
    if os.environ.get("ORCH_REQUIRE_LMMS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def lmms_cli(
    checkpoint: Path, task: str, include_path: Path, out: Path, batch_size: int = 1
) -> list[str]:
    """The `lmms-eval` command line for ``task`` on ``checkpoint`` with orch's model class (found
    through LMMS_EVAL_PLUGINS=workers.lmms, see ``lmms_cli_env``)."""
    return [
        str(LMMS_PYTHON.parent / "lmms-eval"),
        "--model", "orch",
        "--model_args", f"pretrained={checkpoint},dtype=float32",
        "--device", "cpu",
        "--tasks", task,
        "--include_path", str(include_path),
        "--batch_size", str(batch_size),
        "--output_path", str(out),
        "--timezone", "UTC",
    ]  # fmt: skip


def lmms_cli_env(hf_home: Path) -> dict[str, str]:
    from tests.helpers.paths import repo_env

    return repo_env(
        LMMS_EVAL_PLUGINS="workers.lmms",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(hf_home),
    )

"""The training loop as Ray Train workers run it (workers/train.py's ``train_rank``: the run
directory's spec, the engine, the loader, the checkpointer), in two real processes of one gloo
group without Ray: properties of the data plane that need two ranks, not the control plane (the
demo job's `orch submit --resume-from` is test_e2e's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
import torch

from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import load_spec
from tests.helpers.distributed import run_ranks
from tests.helpers.jobs import vqa_job

pytestmark = pytest.mark.slow  # two processes importing torch, transformers and DeepSpeed

RANK = """
import os, sys
from pathlib import Path
import deepspeed, torch
store, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Set, DeepSpeed does not look for MPI; the file store needs no port.
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK=str(rank),
                  WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
deepspeed.init_distributed(dist_backend="gloo", init_method=f"file://{{store}}", rank=rank,
                           world_size=world)
from orchestrator.contract.layout import RunDir
from workers.train import train_rank
train_rank(RunDir(Path({run!r})), rank, world, world, torch.device("cpu"),
           lambda: [{{"rank": r}} for r in range(world)])
"""


def train(job: Path, run: Path, *overrides: str) -> Path:
    """A run directory of ``job`` (with ``overrides``), trained by two ranks to its end."""
    resolved = load_spec(job, list(overrides)).to_toml_dict()
    RunDir(run).create(tomli_w.dumps(resolved), resolved)
    script = run.parent / f"{run.name}_rank.py"
    script.write_text(RANK.format(run=str(run)))
    run_ranks(script, 2)
    return run


def test_a_run_packed_by_tokens_resumes_bit_identical(
    tmp_path: Path, demo_data: Path, tiny_model: Path
) -> None:
    """jobs/demo_vqa.toml packs by a token budget (training.batch_tokens): the samples waiting
    in the pack pool are in the checkpoint's data position, so a run resumed from step 6 trains
    on exactly what the uninterrupted one does, to bit-identical weights at step 12 (fp32, CPU);
    and its rows are full."""
    from safetensors.torch import load_file

    job = vqa_job(tmp_path, demo_data, tiny_model, max_steps=12, checkpoint_every=6, log_every=6)
    whole = train(job, tmp_path / "whole")
    state = json.loads((whole / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert state["data_position"]["pending"]  # drawn, waiting to be packed
    resumed = train(
        job, tmp_path / "resumed", f"training.resume_from='{whole / 'checkpoints' / 'step_000006'}'"
    )
    starts = [json.loads(x) for x in (resumed / "logs" / "train_events.jsonl").open()]
    assert starts[0]["event"] == "started" and starts[0]["step"] == 6
    assert starts[0]["world_size"] == 2
    wa = load_file(whole / "checkpoints" / "step_000012" / "hf" / "model.safetensors")
    wb = load_file(resumed / "checkpoints" / "step_000012" / "hf" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = {
        run: {r["step"]: r for r in map(json.loads, (run / "logs" / "train_metrics.jsonl").open())}
        for run in (whole, resumed)
    }
    assert sorted(rows[whole]) == [6, 12] and sorted(rows[resumed]) == [12]
    assert rows[whole][12]["loss"] == rows[resumed][12]["loss"]
    assert rows[whole][12]["n"] == rows[resumed][12]["n"]  # the same samples, counted
    assert all(r["pack_budget_fill"] >= 0.95 for r in rows[whole].values())

"""A planted NaN goes through the real tiny model; the guard stops (or skips) and writes a
forensics file that names the planted sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.distributed import run_ranks
from workers.data.encode import ClassificationEncoder
from workers.data.manifest import read_manifest
from workers.guard import Guard, NonFiniteError
from workers.models.classifier import build_classifier, classification_loss


def planted_batch(tiny_model: Path, demo_data: Path) -> tuple[object, torch.Tensor]:
    samples = read_manifest(demo_data / "faces" / "train.jsonl", "faces", 2)[:4]
    encoder = ClassificationEncoder(tiny_model, "what is in the image ?", 3136, 3136)
    batch = encoder.encode(samples, {"faces": 2})
    # Plant: the third image's pixels are NaN (16 patches per 56x56 image).
    batch.pixel_values[32:48] = float("nan")
    model = build_classifier(tiny_model, 2, "mean", "sdpa")
    logits = model(**batch.model_inputs(torch.device("cpu"), torch.float32))
    losses, _ = classification_loss(logits, batch.labels, batch.num_classes, batch.ids)
    return batch, losses


def test_planted_nan_stops_training_and_names_the_sample(
    tmp_path: Path, tiny_model: Path, demo_data: Path
) -> None:
    batch, losses = planted_batch(tiny_model, demo_data)
    assert not torch.isfinite(losses[2]) and torch.isfinite(losses[[0, 1, 3]]).all()
    guard = Guard(tmp_path, "stop", 10, rank=0, resume_from=tmp_path / "step_000100")
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 7 .*step_000100"):
        guard.check_losses(7, 0, batch, losses, 1e-3, torch.device("cpu"))
    record = json.loads((tmp_path / "step_000007-micro0-rank0.json").read_text())
    assert record["non_finite_samples"] == [batch.ids[2]]
    assert record["per_dataset_loss"]["faces"] == "nan"
    assert record["samples"][0]["loss"] == pytest.approx(float(losses[0].detach()))
    assert record["lr"] == 1e-3 and record["resume_from"].endswith("step_000100")


def test_skip_policy_counts_and_stops_past_the_limit(
    tmp_path: Path, tiny_model: Path, demo_data: Path
) -> None:
    batch, losses = planted_batch(tiny_model, demo_data)
    guard = Guard(tmp_path, "skip", max_skipped=1, rank=0)
    finite = losses.nan_to_num(0.0)
    cpu = torch.device("cpu")
    assert guard.check_losses(1, 0, batch, finite, 1e-3, cpu) == (False, False)
    # The preemption request rides on the same flags (one collective per micro-batch).
    assert guard.check_losses(1, 0, batch, finite, 1e-3, cpu, preempt=True) == (False, True)
    assert guard.check_losses(2, 0, batch, losses, 1e-3, cpu) == (True, False)
    assert guard.skipped == 1
    with pytest.raises(NonFiniteError):
        guard.check_losses(3, 0, batch, losses, 1e-3, torch.device("cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000002-micro0-rank0.json",
        "step_000003-micro0-rank0.json",
    ]


def test_non_finite_gradient_norm_stops(tmp_path: Path) -> None:
    guard = Guard(tmp_path, "stop", 10, rank=1)
    guard.check_grad_norm(5, 3.2, 1e-3)
    guard.check_grad_norm(5, None, 1e-3)
    with pytest.raises(NonFiniteError, match="non-finite gradient norm at step 6"):
        guard.check_grad_norm(6, float("inf"), 1e-3)
    assert (
        json.loads((tmp_path / "step_000006-gradnorm-rank1.json").read_text())["grad_norm"] == "inf"
    )


MODULE_NORMS = """
import gc, json, os, sys, torch, deepspeed
import torch.distributed as dist
from tests.helpers.distributed import live_gloo_threads
from workers.distributed import close_process_group
store, rank, world = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK=rank, WORLD_SIZE=world,
                  LOCAL_RANK="0")


def main() -> dict:
    deepspeed.init_distributed(dist_backend="gloo", init_method=f"file://{store}",
                               rank=int(rank), world_size=int(world))
    from deepspeed.utils import safe_get_full_grad
    from workers.train import largest_module_grad_norms
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
           "zero_optimization": {"stage": 2}, "gradient_clipping": 0.0}
    eng, *_ = deepspeed.initialize(model=m, optimizer=opt, config=cfg)
    x = torch.randn(2, 4) * (int(rank) + 1)  # different data per rank: gradients are averaged
    x[0, 0] = 1e3  # one large input: the first layer's gradient dominates
    eng.backward(eng(x).pow(2).sum())
    norms = largest_module_grad_norms(eng)
    # DeepSpeed's own assembly of each full gradient (one all-reduce per parameter): the
    # reference.
    full = {}
    for name, p in eng.module.named_parameters():
        mod = name.rsplit(".", 1)[0]
        full[mod] = full.get(mod, 0.0) + float(safe_get_full_grad(p).pow(2).sum())
    eng.step()
    result = {"norms": norms, "full": {k: v ** 0.5 for k, v in full.items()},
              "global": float(eng.get_global_grad_norm())}
    # Every process that opens a process group closes it (else an exit under load can abort).
    close_process_group(eng)
    return result | {"closed": not dist.is_initialized()}


result = main()
gc.collect()  # the engine, and with it the last reference to its group
# Nothing of gloo runs when the interpreter finalizes: no thread can still be freeing tensors.
print(json.dumps(result | {"gloo_threads_at_exit": live_gloo_threads()}))
"""


@pytest.mark.slow  # two DeepSpeed ranks: ~15 s
def test_module_grad_norms_under_zero2_add_up_to_the_global_norm(tmp_path: Path) -> None:
    script = tmp_path / "norms.py"
    script.write_text(MODULE_NORMS)
    # Two ranks, so that each owns only a fragment of the partitioned gradients.
    outputs = run_ranks(script, world=2)
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    # Every rank closed its process group: no group, no gloo thread left at exit.
    assert [r["closed"] for r in results] == [True, True]
    assert [r["gloo_threads_at_exit"] for r in results] == [0, 0]
    result = results[0]
    norms = result["norms"]
    assert list(norms) == ["0", "2"]  # modules, largest first
    assert math.sqrt(sum(v * v for v in norms.values())) == pytest.approx(
        result["global"], rel=1e-5
    )
    # Equal to DeepSpeed's per-parameter assembly of the full gradients, with one collective.
    assert norms == pytest.approx(result["full"], rel=1e-6)

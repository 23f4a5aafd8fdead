"""controller_1000x50_s: rebuild from disk, merge and publish 1,000 steps x 50 datasets.

A run directory is laid out as a finished evaluation would leave it before merging: 1,000
complete checkpoints, and for each of the 50,000 (step, dataset) parts a result file and a
ledger entry marked succeeded. The timed part is what a restarted controller does: read the
ledger, decide, merge every step, choose the best, publish (to a null tracker) and export the
best checkpoint to export/best. The baseline, in the same run, is reading the same 50,000 part
files once with json.load (the least any rebuild must do); the ratio shows the controller's
overhead over raw I/O.

Each checkpoint is laid out as the train loop writes it (orchestrator/contract/checkpoint.py):
deepspeed/, hf/ with the files save_classifier writes, trainer_state.json, COMPLETE last (with
the weights' digest, as the train loop records it). The
files hold placeholder bytes, not weights: the export hard-links them, so its cost is per file,
not per byte, and the controller never reads them.

    python bench/controller_1000x50.py [--steps 1000] [--datasets 50] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.layout import RunDir
from orchestrator.contract.spec import validate_spec
from orchestrator.core.controller import Controller, FinishedTraining
from orchestrator.core.export import EXPORT_FILE
from orchestrator.core.ledger import LedgerEntry, PartStatus
from orchestrator.eval_backends.base import NullBackend
from orchestrator.tracking import NullTracker
from workers.evaluate import checkpoint_digest

# What save_classifier leaves in hf/ for the tiny model: save_pretrained's files, the head, the
# head's metadata and the processor files copied from the source model.
HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "classifier_head.pt",
    "orch_classifier.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)


def fabricate_checkpoint(checkpoints: Path, step: int) -> Path:
    """One checkpoint in the train loop's layout; COMPLETE is written last, as save_checkpoint
    does."""
    d = ckpt.checkpoint_dir(checkpoints, step)
    (d / ckpt.DEEPSPEED_TAG).mkdir(parents=True)
    (d / ckpt.DEEPSPEED_TAG / "mp_rank_00_model_states.pt").write_bytes(b"bench")
    hf = d / ckpt.HF_DIR
    hf.mkdir()
    for name in HF_FILES:
        (hf / name).write_bytes(b"bench")
    (d / ckpt.TRAINER_STATE).write_text(json.dumps({"step": step, "data_position": None}))
    marker = {"step": step, "time": time.time(), "hf_digest": checkpoint_digest(hf)}
    (d / ckpt.COMPLETE).write_text(json.dumps(marker))
    return d


def layout(root: Path, steps: int, datasets: list[str]) -> RunDir:
    rundir = RunDir(root / "run")
    rundir.create("", {})
    for i in range(1, steps + 1):
        step = i * 10
        fabricate_checkpoint(rundir.checkpoints, step)
        for name in datasets:
            acc = (i % 97) / 97
            part = {
                "schema": 1,
                "step": step,
                "dataset": name,
                "partial": True,
                "n": 100,
                "correct": round(acc * 100),
                "metrics": {"loss": 1 - acc, "accuracy": acc},
            }
            rundir.part(step, name).parent.mkdir(exist_ok=True)
            rundir.part(step, name).write_text(json.dumps(part))
            entry = LedgerEntry(
                step, name, step, PartStatus.SUCCEEDED, 1, "bench", f"{step}-{name}", 0.0, 1.0
            )
            rundir.ledger(step, name).parent.mkdir(exist_ok=True)
            rundir.ledger(step, name).write_text(json.dumps(entry.to_json()))
    return rundir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="20 steps x 5 datasets (seconds)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.datasets = 20, 5
    names = [f"d{i:02d}" for i in range(args.datasets)]
    with tempfile.TemporaryDirectory() as tmp:
        rundir = layout(Path(tmp), args.steps, names)
        spec = validate_spec(
            {
                "name": "bench",
                "runs_dir": tmp,
                "model": {"path": tmp},
                "datasets": {n: {"train": "x", "eval": "x", "num_classes": 10} for n in names},
                "training": {"max_steps": args.steps * 10},
                "evaluation": {"final_full": False},
            }
        )
        t0 = time.perf_counter()
        for p in rundir.eval_dir.glob("step_*/*.json"):
            json.loads(p.read_text())
        baseline = time.perf_counter() - t0

        t0 = time.perf_counter()
        c = Controller(spec, rundir, NullBackend(), NullTracker(), FinishedTraining(), poll_s=0)
        while c.result is None:
            c.iterate()
        elapsed = time.perf_counter() - t0
        assert c.result.exit_code == 0, c.result
        assert len(list(rundir.eval_dir.glob("step_*.json"))) == args.steps
        best = json.loads(rundir.best.read_text())["step"]
        exported = rundir.path / "export" / "best"
        assert json.loads((exported / EXPORT_FILE).read_text())["step"] == best
        assert sorted(p.name for p in exported.iterdir()) == sorted([*HF_FILES, EXPORT_FILE])
    print(f"controller_{args.steps}x{args.datasets}_s={elapsed:.3f}")
    print(f"read_parts_baseline_s={baseline:.4f}")
    print(f"controller_vs_read_ratio={elapsed / baseline:.2f}")


if __name__ == "__main__":
    main()

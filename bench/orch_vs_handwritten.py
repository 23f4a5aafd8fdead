"""`orch submit` against a minimal hand-written Ray Train + DeepSpeed script doing the same steps.

The fixed job: jobs/demo_mix.toml on the tiny model and the demo data, 150 optimizer steps,
2 Ray Train workers, DeepSpeed ZeRO-2 on CPU, one checkpoint at the end, evaluation and
tracking off (`--set evaluation.during_training=false evaluation.final_full=false
tracking.mode=disabled`). The hand-written script (below, ~70 lines) is what a competent user
would write without orch: `ray.init`, a `TorchTrainer` whose workers load the same model with
`from_pretrained`, the same head, the same DeepSpeed config values, the same batch size, draw
samples with the same mixing weights, encode them with orch's own encoder (so both do the same
data work), train 150 steps and save a DeepSpeed checkpoint. Both run as subprocesses, timed from
process start to exit (each starts its own Ray), alternated, 3 pairs; medians and their ratio.

    PYTHONPATH=. .venv/bin/python bench/orch_vs_handwritten.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 150
PAIRS = 3

HANDWRITTEN = """
import json, sys, time
from pathlib import Path
import numpy as np, torch, ray, deepspeed
from ray.train import ScalingConfig, RunConfig
from ray.train.torch import TorchTrainer

ROOT, DEMO, MODEL, OUT, STEPS = sys.argv[1:6]
STEPS = int(STEPS)
sys.path.insert(0, ROOT)

def train_fn(cfg):
    from transformers import AutoModelForImageTextToText
    from workers.data.encode import ClassificationEncoder
    from workers.data.manifest import read_manifest
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sets = {"digits": (10, 2.0), "textures": (10, 1.0), "faces": (2, 1.0)}
    data = {n: read_manifest(Path(DEMO) / n / "train.jsonl", n, k) for n, (k, _) in sets.items()}
    names = sorted(sets)
    probs = np.array([sets[n][1] for n in names]) / sum(sets[n][1] for n in names)
    encoder = ClassificationEncoder(Path(MODEL), "what is in the image ?", 3136, 3136)
    vlm = AutoModelForImageTextToText.from_pretrained(MODEL, attn_implementation="sdpa")
    head = torch.nn.Linear(vlm.config.text_config.hidden_size, 10)
    model = torch.nn.ModuleDict({"vlm": vlm, "head": head})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 20))
    ds_config = {"train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 1,
                 "train_batch_size": 16 * world, "gradient_clipping": 1.0,
                 "zero_optimization": {"stage": 2}, "bf16": {"enabled": False}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                      config=ds_config, dist_init_required=False)
    rng = np.random.default_rng([0, rank])
    for step in range(STEPS):
        picks = rng.choice(len(names), size=16, p=probs)
        samples = [data[names[k]][int(rng.integers(len(data[names[k]])))] for k in picks]
        batch = encoder.encode(samples, {n: k for n, (k, _) in sets.items()})
        out = vlm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        pixel_values=batch.pixel_values, image_grid_thw=batch.image_grid_thw,
                        mm_token_type_ids=(batch.input_ids == vlm.config.image_token_id).int())
        mask = batch.attention_mask.unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        logits = head(pooled)
        classes = torch.arange(10)[None] >= batch.num_classes[:, None]
        logits = logits.masked_fill(classes, torch.finfo(logits.dtype).min)
        loss = torch.nn.functional.cross_entropy(logits, batch.labels)
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(OUT, tag="final")

ray.init(num_cpus=4)
TorchTrainer(train_fn, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
             run_config=RunConfig(storage_path=OUT)).fit()
ray.shutdown()
"""


def timed(cmd: list[str], cwd: Path) -> float:
    env = os.environ | {"PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    demo, model = ROOT / "data" / "demo", ROOT / "models" / "tiny-qwen2.5-vl"
    if not (demo / "COMPLETE").is_file() or not (model / "config.json").is_file():
        raise SystemExit("run `make run` (or orch data demo / orch model tiny) first")
    orch_times, hand_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "handwritten.py"
        script.write_text(HANDWRITTEN)
        for i in range(PAIRS):
            orch_cmd = [
                str(Path(sys.executable).parent / "orch"),
                "submit",
                str(ROOT / "jobs" / "demo_mix.toml"),
                "--run-name",
                f"bench-{i}",
                "--set",
                f"runs_dir='{work / 'runs'}'",
                "--set",
                f"model.path='{model}'",
                "--set",
                f"training.max_steps={STEPS}",
                "--set",
                f"training.checkpoint_every={STEPS}",
                "--set",
                "evaluation.during_training=false",
                "--set",
                "evaluation.final_full=false",
                "--set",
                "tracking.mode=disabled",
            ]
            hand_cmd = [sys.executable, str(script), str(ROOT), str(demo), str(model)]
            hand_cmd += [str(work / f"hand-{i}"), str(STEPS)]
            orch_times.append(timed(orch_cmd, ROOT))
            hand_times.append(timed(hand_cmd, work))
    orch_s, hand_s = statistics.median(orch_times), statistics.median(hand_times)
    print(f"orch_submit_s={orch_s:.2f}")
    print(f"handwritten_s={hand_s:.2f}")
    print(f"orch_vs_handwritten={orch_s / hand_s:.3f}")
    print(f"orch_submit_runs_s={json.dumps([round(t, 2) for t in orch_times])}")
    print(f"handwritten_runs_s={json.dumps([round(t, 2) for t in hand_times])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

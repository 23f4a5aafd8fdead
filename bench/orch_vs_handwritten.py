"""`orch submit` against a minimal hand-written Ray Train + DeepSpeed script doing the same steps,
split into a fixed cost (start-up and the end) and a per-step cost.

The fixed job: jobs/demo_mix.toml on the tiny model and the demo data, 150 optimizer steps, 2
Ray Train workers (--workers; --quick: 1, on each side), DeepSpeed ZeRO-2 on CPU, one checkpoint
at the end, evaluation and tracking off (`--set evaluation.during_training=false
evaluation.final_full=false tracking.mode=disabled`). The hand-written script (below, ~80 lines)
is what a competent user would write without orch: `ray.init`, a `TorchTrainer` whose workers
load the same model with `from_pretrained`, the same head, the same DeepSpeed config values, the
same batch size, draw samples with the same mixing weights, encode them with orch's own encoder
(so both do the same data work), train 150 steps and save a DeepSpeed checkpoint.

Both run as subprocesses, timed from launch to exit (each starts its own Ray), in pairs whose
order alternates (orch first, then the script first). Inside each run, rank 0's wall clock at
the end of step 10 and of the last step gives the steady per-step cost:

    per_step = (t[last step] - t[step 10]) / (steps - 10)
    fixed    = (exit - launch) - steps * per_step

orch's times come from its run directory (logs/train_metrics.jsonl: one row per log_every=10
steps, stamped when written; logs/train_events.jsonl: "started" once the engine is built,
"checkpoint" with its DeepSpeed and HF-export seconds). The script stamps the same points
itself. The fixed cost is also split: launch -> training loop ready (imports, Ray, workers,
model, DeepSpeed), the first 10 steps' excess over 10 steady steps (warm-up), and last step ->
exit (checkpoint, shutdown).

CPU: the bench samples the CPU time of each run's whole process tree (every 0.5 s, psutil) and
reports the CPU seconds per steady step and the fixed CPU seconds (all the run's CPU minus
steps x the per-step CPU), in all and by group: the Ray Train workers, the driver (`orch
submit`'s controller, or the script's `fit()`), and the rest of Ray (GCS, raylet, agents,
dashboard, the Train controller actor, idle or eval workers). Unlike wall time it hardly moves
when other processes share the machine, and it says whether a side is slower by doing more work
or by waiting. (A process that lives less than a sampling interval may be missed.)

Each figure is the median over the runs, with min and max; the ratios are orch / hand-written
of the medians. cpus and the 1-minute load average at start and end describe the machine.

    PYTHONPATH=. .venv/bin/python bench/orch_vs_handwritten.py [--pairs 5] [--steps 150]
        [--workers 2] [--quick] [--demo data/demo] [--model models/tiny-qwen2.5-vl]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import demo_job
import psutil

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 10  # steps before the steady window; orch's first metrics row is at log_every=10

HANDWRITTEN = """
import json, sys, time
from pathlib import Path
import numpy as np, torch, ray, deepspeed
from ray.train import ScalingConfig, RunConfig
from ray.train.torch import TorchTrainer

ROOT, DEMO, MODEL, OUT, STEPS, WORKERS = sys.argv[1:7]
STEPS, WORKERS = int(STEPS), int(WORKERS)
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
    stamps = {"ready": time.time(), "steps": []}  # bench timing only, not part of the work
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
        stamps["steps"].append(time.time())
    t_save = time.time()
    engine.save_checkpoint(OUT, tag="final")
    stamps["save_s"] = time.time() - t_save
    if rank == 0:
        Path(OUT, "bench_timing.json").write_text(json.dumps(stamps))

ray.init(address="local", num_cpus=4)
scaling = ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1})
TorchTrainer(train_fn, scaling_config=scaling, run_config=RunConfig(storage_path=OUT)).fit()
ray.shutdown()
"""


GROUPS = ("driver", "workers", "other")


class CpuSampler:
    """CPU seconds (user + system) used by a process and all its descendants, by group: the
    driver (the process launched), the Ray Train workers, everything else (Ray's GCS, raylet,
    agents, dashboard, the Train controller actor, idle or eval workers). Sampled every
    ``every_s`` in a thread; read back at any moment of the run by linear interpolation."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid = pid
        self.every_s = every_s
        self.last: dict[int, tuple[str, float]] = {}  # pid -> (group, CPU seconds last seen)
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _group(self, proc: psutil.Process) -> str:
        if proc.pid == self.pid:
            return "driver"
        known = self.last.get(proc.pid)
        if known is not None and known[0] == "workers":
            return "workers"  # a worker stays one through its renames
        return "workers" if proc.name().startswith("ray::RayTrainWo") else "other"

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        now = time.time()
        for proc in procs:
            try:
                cpu = proc.cpu_times()
                self.last[proc.pid] = (self._group(proc), cpu.user + cpu.system)
            except psutil.Error:
                continue  # gone between the listing and the read: its last sample stands
        totals = dict.fromkeys(GROUPS, 0.0)
        for group, seconds in self.last.values():
            totals[group] += seconds
        self.samples.append((now, totals))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def at(self, t: float) -> dict[str, float]:
        """CPU seconds used by each group up to time ``t``."""
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i == 0:
            return dict(self.samples[0][1])
        if i == len(times):
            return dict(self.samples[-1][1])
        (t0, a), (t1, b) = self.samples[i - 1], self.samples[i]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return {g: a[g] + w * (b[g] - a[g]) for g in GROUPS}


@dataclass(frozen=True)
class Run:
    """One run's wall-clock points (time.time(), same clock in every process)."""

    launch: float
    ready: float  # the training loop is about to take its first step
    step_warm: float  # end of step WARMUP
    step_last: float  # end of the last step
    exit: float
    steps: int
    save_s: float  # the checkpoint at the end (orch: DeepSpeed + HF export)
    cpu_steady: dict[str, float]  # CPU seconds per group between step_warm and step_last
    cpu_ready: dict[str, float]  # CPU seconds per group from launch to ready
    cpu_total: dict[str, float]  # CPU seconds per group from launch to exit

    def cpu_per_step(self, group: str | None = None) -> float:
        used = sum(self.cpu_steady.values()) if group is None else self.cpu_steady[group]
        return used / (self.steps - WARMUP)

    def fixed_cpu(self, group: str | None = None) -> float:
        """CPU seconds not proportional to the steps: start-up, warm-up, checkpoint, exit."""
        used = sum(self.cpu_total.values()) if group is None else self.cpu_total[group]
        return used - self.steps * self.cpu_per_step(group)

    @property
    def per_step(self) -> float:
        return (self.step_last - self.step_warm) / (self.steps - WARMUP)

    @property
    def wall(self) -> float:
        return self.exit - self.launch

    @property
    def fixed(self) -> float:
        return self.wall - self.steps * self.per_step

    @property
    def to_ready(self) -> float:
        return self.ready - self.launch

    @property
    def warmup_excess(self) -> float:
        return (self.step_warm - self.ready) - WARMUP * self.per_step

    @property
    def after_last_step(self) -> float:
        return self.exit - self.step_last


def launch(cmd: list[str], cwd: Path) -> tuple[float, float, CpuSampler]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        with CpuSampler(proc.pid) as cpu:
            code = proc.wait()
        t1 = time.time()
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd[:4]} failed ({code}):\n{err.read()[-3000:]}")
    return t0, t1, cpu


def cpu_figures(
    cpu: CpuSampler, ready: float, warm: float, last: float
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """CPU seconds per group: (steady window, launch to ready, launch to exit)."""
    a, b = cpu.at(warm), cpu.at(last)
    return {g: b[g] - a[g] for g in GROUPS}, cpu.at(ready), dict(cpu.samples[-1][1])


def jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_orch(work: Path, job: Path, i: int, steps: int, workers: int) -> Run:
    name = f"bench-{i}"
    cmd = [
        str(Path(sys.executable).parent / "orch"),
        "submit",
        str(job),
        "--run-name",
        name,
        "--set",
        f"runs_dir='{work / 'runs'}'",
        "--set",
        f"training.max_steps={steps}",
        "--set",
        f"training.checkpoint_every={steps}",
        "--set",
        f"training.log_every={WARMUP}",
        "--set",
        f"training.num_workers={workers}",
        "--set",
        "evaluation.during_training=false",
        "--set",
        "evaluation.final_full=false",
        "--set",
        "tracking.mode=disabled",
    ]
    t0, t1, cpu = launch(cmd, ROOT)
    logs = work / "runs" / name / "logs"
    at = {int(r["step"]): r["time"] for r in jsonl(logs / "train_metrics.jsonl")}
    events = jsonl(logs / "train_events.jsonl")
    started = next(e["time"] for e in events if e["event"] == "started")
    saved = next(e for e in events if e["event"] == "checkpoint")
    figures = cpu_figures(cpu, started, at[WARMUP], at[steps])
    return Run(t0, started, at[WARMUP], at[steps], t1, steps, saved["total_s"], *figures)


def run_handwritten(
    work: Path, script: Path, demo: Path, model: Path, i: int, steps: int, workers: int
) -> Run:
    out = work / f"hand-{i}"
    cmd = [sys.executable, str(script), str(ROOT), str(demo), str(model), str(out), str(steps),
           str(workers)]  # fmt: skip
    t0, t1, cpu = launch(cmd, work)
    stamps = json.loads((out / "bench_timing.json").read_text())
    warm, last = stamps["steps"][WARMUP - 1], stamps["steps"][-1]
    figures = cpu_figures(cpu, stamps["ready"], warm, last)
    return Run(t0, stamps["ready"], warm, last, t1, steps, stamps["save_s"], *figures)


def summary(name: str, values: list[float], digits: int) -> float:
    """Print the median, min and max of one figure over the runs; return the median."""
    med = statistics.median(values)
    print(f"{name}={med:.{digits}f}")
    print(f"{name}_min={min(values):.{digits}f}")
    print(f"{name}_max={max(values):.{digits}f}")
    return med


# (figure, digits, value of a run); per-step CPU: all processes of the run, then by group.
FIGURES: tuple[tuple[str, int, Callable[[Run], float]], ...] = (
    ("per_step_s", 4, lambda r: r.per_step),
    ("fixed_s", 2, lambda r: r.fixed),
    ("to_ready_s", 2, lambda r: r.to_ready),
    ("warmup_excess_s", 2, lambda r: r.warmup_excess),
    ("after_last_step_s", 2, lambda r: r.after_last_step),
    ("checkpoint_s", 3, lambda r: r.save_s),
    ("wall_s", 2, lambda r: r.wall),
    ("cpu_per_step_s", 4, lambda r: r.cpu_per_step()),
    ("worker_cpu_per_step_s", 4, lambda r: r.cpu_per_step("workers")),
    ("driver_cpu_per_step_s", 4, lambda r: r.cpu_per_step("driver")),
    ("other_cpu_per_step_s", 4, lambda r: r.cpu_per_step("other")),
    ("to_ready_cpu_s", 2, lambda r: sum(r.cpu_ready.values())),
    ("fixed_cpu_s", 2, lambda r: r.fixed_cpu()),
    ("fixed_worker_cpu_s", 2, lambda r: r.fixed_cpu("workers")),
    ("fixed_driver_cpu_s", 2, lambda r: r.fixed_cpu("driver")),
    ("fixed_other_cpu_s", 2, lambda r: r.fixed_cpu("other")),
)
RATIOS = ("per_step_s", "fixed_s", "wall_s", "cpu_per_step_s", "fixed_cpu_s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5, help="orch/hand-written pairs (repeats)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers, on each side")
    ap.add_argument("--quick", action="store_true",
                    help="1 pair of 20 steps on 1 worker each (about 40 s)")  # fmt: skip
    demo_job.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.steps, args.workers = 1, 20, 1
    if args.steps <= WARMUP:
        raise SystemExit(f"--steps must exceed the {WARMUP} warm-up steps")
    demo, model = args.demo.resolve(), args.model.resolve()
    demo_job.check(demo, model)
    orch: list[Run] = []
    hand: list[Run] = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "handwritten.py"
        script.write_text(HANDWRITTEN)
        job = demo_job.write_job(work / "job.toml", demo, model)
        for i in range(args.pairs):
            # Alternate which goes first, so a slow drift of the machine hits both alike.
            if i % 2 == 0:
                orch.append(run_orch(work, job, i, args.steps, args.workers))
                hand.append(run_handwritten(work, script, demo, model, i, args.steps, args.workers))
            else:
                hand.append(run_handwritten(work, script, demo, model, i, args.steps, args.workers))
                orch.append(run_orch(work, job, i, args.steps, args.workers))
    # The machine's state: on a shared machine other processes take CPU from both sides (Ray
    # runs its workers at nice 15, so any ordinary process comes first).
    print(f"cpus={os.cpu_count()}")
    print(f"load_avg_1m_start={load_start:.2f}")
    print(f"load_avg_1m_end={os.getloadavg()[0]:.2f}")
    print(f"runs_per_side={args.pairs}")
    print(f"workers={args.workers}")
    print(f"steps={args.steps}")
    print(f"steady_steps={args.steps - WARMUP}")
    medians: dict[str, tuple[float, float]] = {}
    for figure, digits, value in FIGURES:
        o = summary(f"orch_{figure}", [value(r) for r in orch], digits)
        h = summary(f"handwritten_{figure}", [value(r) for r in hand], digits)
        medians[figure] = (o, h)
    for figure in RATIOS:
        o, h = medians[figure]
        print(f"orch_vs_handwritten_{figure.removesuffix('_s')}={o / h:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

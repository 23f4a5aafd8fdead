"""Memory of a training run against the size of its manifest: 10 million rows against 10,000.

The same one-dataset classification job (the demo's faces, the tiny model, 2 training workers,
30 steps, no eval) is submitted twice with `orch submit`, once on a 10,000-row train manifest and
once on a 10,000,000-row one (Parquet; rows cycle over the demo's face images, each with its own
id). While each run goes, every process of its tree (the submit process with its controller and
pre-flight, Ray's daemons, the training workers, their loader workers) is sampled every 0.2 s
for its peak RSS (VmHWM). Printed, per size: the largest training process's peak, the largest
process's peak, the sum of every process's peak, the run's wall time; the ratios 10m / 10k; and
``index_build_rows_per_s``, from the 10m run's row index (workers/data/index.py), with the
pre-flight's validation rows/s from its log.

    PYTHONPATH=. .venv/bin/python bench/train_rss.py [--rows 10000000] [--quick]

``--quick`` (for `make test`): 200,000 rows against 10,000, and no run: one fresh process per
size imports what a training worker imports, opens the index as training does
(``load_train_data``), walks 30 steps of rank 0's plan of 2 and reads every picked row; its peak
RSS is ``train_rss_loader_mb_<size>`` (``mode=loader``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import psutil
import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_job import ROOT, add_arguments, check, write_job

SMALL = 10_000
CHUNK = 1_000_000


def write_manifest(source: Path, out: Path, rows: int) -> Path:
    """``rows`` classification rows cycling over ``source``'s images, each with its own id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [json.loads(line) for line in source.read_text().splitlines()]
    paths = [str(Path(r["image_path"]).resolve()) for r in base]
    labels = [int(r["label"]) for r in base]
    schema = pa.schema(
        [("id", pa.string()), ("image_path", pa.string()), ("label", pa.int64()),
         ("dataset_name", pa.string())]
    )  # fmt: skip
    with pq.ParquetWriter(out, schema) as w:
        for start in range(0, rows, CHUNK):
            idx = range(start, min(rows, start + CHUNK))
            w.write_table(
                pa.table(
                    {
                        "id": [f"faces/{i}" for i in idx],
                        "image_path": [paths[i % len(paths)] for i in idx],
                        "label": [labels[i % len(labels)] for i in idx],
                        "dataset_name": ["faces"] * len(idx),
                    },
                    schema=schema,
                ),
                row_group_size=65536,
            )
    return out


def one_dataset_job(out: Path, demo: Path, model: Path, manifest: Path, steps: int) -> Path:
    job = write_job(out, demo, model)
    raw = tomllib.loads(job.read_text())
    raw["name"] = "train_rss"
    raw["datasets"] = {"faces": raw["datasets"]["faces"] | {"train": str(manifest)}}
    raw["datasets"]["faces"].pop("weight", None)
    raw["training"] |= {"max_steps": steps, "checkpoint_every": steps, "num_workers": 2}
    raw["evaluation"] |= {"during_training": False, "final_full": False}
    raw["best"] = {"metric": "overall_accuracy", "mode": "max"}
    raw["tracking"] = {"mode": "disabled"}
    out.write_text(tomli_w.dumps(raw))
    return out


def _hwm_kb(p: psutil.Process) -> int:
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def measure(job: Path, cwd: Path) -> dict[str, float]:
    """Run ``orch submit JOB`` and sample its process tree; the figures of one run."""
    t0 = time.perf_counter()
    log = cwd / "submit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "submit", str(job)],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        root = psutil.Process(proc.pid)
        peak: dict[int, tuple[int, str]] = {}  # pid -> (VmHWM kB, what it is)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    hwm = _hwm_kb(p)
                    what = " ".join(p.cmdline())[:120] or p.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError,
                        ProcessLookupError):  # fmt: skip
                    continue  # it ended between the listing and the read
                if hwm >= peak.get(p.pid, (0, ""))[0]:
                    peak[p.pid] = (hwm, what)
            time.sleep(0.2)
        code = proc.wait()
    wall = time.perf_counter() - t0
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"orch submit {job} exited {code}:\n{text[-4000:]}")
    train = [kb for kb, what in peak.values() if "RayTrainWorker" in what]
    if not train:
        raise SystemExit(f"no training worker seen among {len(peak)} processes")
    rates = [float(m) for m in re.findall(r"faces\.train: .* \((\d+) rows/s\)", text)]
    indexes = list((cwd / "runs" / ".index").glob("faces.train.*/meta.json"))
    meta = json.loads(indexes[0].read_text())
    return {
        "train_mb": max(train) / 1024,
        "max_mb": max(kb for kb, _ in peak.values()) / 1024,
        "sum_mb": sum(kb for kb, _ in peak.values()) / 1024,
        "processes": len(peak),
        "wall_s": wall,
        "index_rows_per_s": meta["rows"] / max(meta["build_s"], 1e-9),
        "validate_rows_per_s": rates[-1] if rates else float("nan"),
    }


PROBE = """
import json, sys
from pathlib import Path
import deepspeed, torch, transformers  # noqa: F401  (what a training worker imports)
from orchestrator.contract.spec import load_spec, resolve_paths
from workers.data.loader import Plan
from workers.data.microbatch import load_train_data
job = Path(sys.argv[1])
spec = resolve_paths(load_spec(job), job.parent)
data = load_train_data(spec)
plan = Plan(sizes={n: len(s) for n, s in data.items()}, weights={"faces": 1.0}, seed=0,
            start_step=0, max_steps=30, grad_accum=1, global_micro=32, rank=0, world=2)
rows = [data[n][i] for _, _, picks, _, _ in plan.picks() for n, i in picks]
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"rows": len(rows), "peak_mb": int(hwm.split()[1]) / 1024}))
"""


def probe(job: Path) -> dict[str, float]:
    """The quick mode's figures of one size: the index built here (timed), then a fresh
    process's peak RSS reading training's rows from it."""
    from orchestrator.contract.spec import load_spec, resolve_paths
    from workers.data.index import open_index

    spec = resolve_paths(load_spec(job), job.parent)
    index = open_index(spec, "faces", "train")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(job)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        raise SystemExit(f"the loader probe failed:\n{out.stderr[-4000:]}")
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    return {"loader_mb": peak, "index_rows_per_s": len(index) / index.meta["build_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true")
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.rows = 200_000
    check(args.demo, args.model)
    label = f"{args.rows // 1_000_000}m" if args.rows >= 1_000_000 else f"{args.rows // 1000}k"
    with tempfile.TemporaryDirectory(prefix="train_rss-") as tmp:
        figures = {}
        for name, rows in (("10k", SMALL), (label, args.rows)):
            work = Path(tmp) / name
            work.mkdir()
            manifest = write_manifest(args.demo / "faces" / "train.jsonl", work / "m.parquet", rows)
            job = one_dataset_job(work / "job.toml", args.demo, args.model, manifest, args.steps)
            figures[name] = probe(job) if args.quick else measure(job, work)
    small, big = figures["10k"], figures[label]
    if args.quick:
        print("mode=loader")
        for name, f in figures.items():
            print(f"train_rss_loader_mb_{name}={f['loader_mb']:.1f}")
        print(f"train_rss_loader_ratio={big['loader_mb'] / small['loader_mb']:.3f}")
        print(f"index_build_rows_per_s={big['index_rows_per_s']:.0f}")
        return
    for name, f in figures.items():
        print(f"train_rss_mb_{name}={f['train_mb']:.1f}")
        print(f"train_rss_max_mb_{name}={f['max_mb']:.1f}")
        print(f"train_rss_sum_mb_{name}={f['sum_mb']:.1f}")
        print(f"train_rss_processes_{name}={f['processes']}")
        print(f"train_wall_s_{name}={f['wall_s']:.1f}")
    print(f"train_rss_ratio={big['train_mb'] / small['train_mb']:.3f}")
    print(f"train_rss_max_ratio={big['max_mb'] / small['max_mb']:.3f}")
    print(f"train_rss_sum_ratio={big['sum_mb'] / small['sum_mb']:.3f}")
    print(f"index_build_rows_per_s={big['index_rows_per_s']:.0f}")
    print(f"validate_rows_per_s={big['validate_rows_per_s']:.0f}")


if __name__ == "__main__":
    main()

"""`orch status` and `orch logs`: what a run is doing, read from its directory."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.contract.layout import RunDir, read_json_or_none
from orchestrator.core.ledger import Ledger


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def collect_status(rundir: RunDir) -> dict[str, Any]:
    events = _jsonl(rundir.logs / "train_events.jsonl")
    metrics = _jsonl(rundir.train_metrics)
    starts = [e for e in events if e["event"] == "started"]
    finished = any(e["event"] == "finished" for e in events)
    parts = Counter(str(e.status) for e in Ledger(rundir).entries.values())
    final = read_json_or_none(rundir.final)
    return {
        "run": rundir.name,
        "run_dir": str(rundir.path),
        "training": {
            "state": "finished" if finished else ("running" if starts else "not started"),
            "restarts": max(0, len(starts) - 1),
            "last": metrics[-1] if metrics else None,
        },
        "checkpoints": sorted(rundir.complete_checkpoints()),
        "eval_parts": dict(parts),
        "best": read_json_or_none(rundir.best),
        "final": final["overall"] if final else None,
    }


def render_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{status['run']}  ({status['run_dir']})", show_header=False)
    tr = status["training"]
    last = tr["last"]
    progress = (
        f"step {last['step']}: loss {last['loss']:.4f}, accuracy {last['accuracy']:.4f}, "
        f"{last.get('step_time_s', 0) * 1000:.0f} ms/step, "
        f"{last.get('samples_per_s', 0):.0f} samples/s ({time.time() - last['time']:.0f} s ago)"
        if last
        else "no metrics yet"
    )
    table.add_row("training", f"{tr['state']}, {tr['restarts']} restart(s)")
    table.add_row("last report", progress)
    if last and "text_tokens_per_s" in last:
        perf = (
            f"{last['text_tokens_per_s']:.0f} text + "
            f"{last['image_tokens_per_s']:.0f} image tokens/s, "
            f"{last['tflops_per_s']:.3f} TFLOP/s"
            + (f", MFU {100 * last['mfu']:.1f}%" if "mfu" in last else "")
            + f", data wait {100 * last['data_wait_fraction']:.0f}%"
            + (f", peak memory {last['peak_mem_gb']:.1f} GiB" if "peak_mem_gb" in last else "")
        )
        table.add_row("throughput", perf)
    table.add_row("checkpoints", ", ".join(map(str, status["checkpoints"])) or "none")
    parts = status["eval_parts"]
    table.add_row("eval parts", ", ".join(f"{k} {v}" for k, v in sorted(parts.items())) or "none")
    best = status["best"]
    table.add_row(
        "best", f"step {best['step']} ({best['metric']} {best['value']:.4f})" if best else "none"
    )
    final = status["final"]
    table.add_row(
        "final", f"accuracy {final['accuracy']:.4f} on {final['n']}" if final else "pending"
    )
    job = status.get("ray_job")
    if job:
        message = f": {job['message']}" if job.get("message") else ""
        where = f"{job['submission_id']} at {job['address']}"
        table.add_row("Ray job", f"{where}: {job['status']}{message}")
    Console().print(table)


def log_files(rundir: RunDir, evals: bool) -> list[Path]:
    files = [rundir.logs / "controller.log"]
    if evals:
        files += sorted((rundir.logs / "eval").glob("*/*.log"))
    return [f for f in files if f.is_file()]

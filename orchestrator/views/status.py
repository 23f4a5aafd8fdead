"""`orch status` and `orch logs`: what a run is doing, read from its directory."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.contract.checkpoint import resumable
from orchestrator.contract.exitcodes import ExitCode
from orchestrator.contract.layout import RunDir, read_json_or_none, read_jsonl
from orchestrator.contract.records import Scores
from orchestrator.core.ledger import Ledger
from orchestrator.diskuse import disk_bytes, human_bytes


def collect_status(rundir: RunDir) -> dict[str, Any]:
    events = read_jsonl(rundir.train_events)
    metrics = read_jsonl(rundir.train_metrics)
    starts = [e for e in events if e["event"] == "started"]
    finished = any(e["event"] == "finished" for e in events)
    parts = Counter(str(e.status) for e in Ledger(rundir).entries.values())
    final = read_json_or_none(rundir.final)
    end = controller_end(rundir)
    state = "finished" if finished else ("running" if starts else "not started")
    if end is not None and not finished:
        code, why = end  # the controller is gone, so training is not running
        state = "preempted" if code == ExitCode.PREEMPTED else f"stopped (exit {code}: {why})"
    complete = rundir.complete_checkpoints()
    return {
        "run": rundir.name,
        "run_dir": str(rundir.path),
        "training": {
            "state": state,
            "restarts": max(0, len(starts) - 1),
            "last": metrics[-1] if metrics else None,
        },
        "checkpoints": sorted(complete),
        "resumable": sorted(s for s, d in complete.items() if resumable(d)),
        "disk": {
            "run_bytes": disk_bytes(rundir.path),
            "checkpoints_bytes": disk_bytes(rundir.checkpoints),
        },
        "removed_by_retention": len(read_jsonl(rundir.retention_log)),
        "eval_parts": dict(parts),
        "best": read_json_or_none(rundir.best),
        "final": final["overall"] if final else None,
        "final_state": final_state(rundir, events, final),
    }


# ---- the final full eval: done, running, pending, or why it did not happen -----------------

_CONTROLLER_END = re.compile(
    r"\S+ \S+ \w+ [\w.]+: run .+? finished \(exit (?P<code>-?\d+)\): (?P<why>.*)"
)


def controller_end(rundir: RunDir) -> tuple[int, str] | None:
    """How the run's last controller ended: logs/controller_end.json (written at its end,
    removed when a controller starts), or, for runs written before that file existed, its last
    "run R finished" line in logs/controller.log if no controller logged after it."""
    recorded = read_json_or_none(rundir.controller_end)
    if recorded is not None:
        return int(recorded["exit"]), str(recorded["reason"])
    log = rundir.controller_log
    if not log.is_file():
        return None
    end: tuple[int, str] | None = None
    for line in log.read_text(errors="replace").splitlines():
        m = _CONTROLLER_END.match(line)
        if m:  # the log is this run's, whatever the directory is called now
            end = (int(m["code"]), m["why"])
        elif end is not None and " orch.controller: " in line:
            end = None  # a later controller of this run is (or was) at work
    return end


def final_state(
    rundir: RunDir, events: list[dict[str, Any]], final: dict[str, Any] | None
) -> dict[str, str]:
    """What the final full eval is: ``done``, ``running``, ``pending`` or ``not run``, and why,
    from the run directory alone (eval/final.json, ledger/, logs/train_events.jsonl, the
    controller's last words in logs/controller.log)."""
    if final is not None:
        o = Scores.from_block(final["overall"])  # schema 1 or 2; whatever metrics it declares
        shown = [f"{m} {v:.4f}" for m, v in o.values.items() if m != "loss" and not math.isnan(v)]
        return {"state": "done", "detail": f"{', '.join(shown[:3]) or 'no metric'} on {o.n}"}
    entries = list(Ledger(rundir).entries.values())
    final_parts = [e for e in entries if e.step is None]
    failed = sorted(
        (e for e in entries if str(e.status) == "failed"), key=lambda e: e.finished_at or 0.0
    )
    end = controller_end(rundir)
    if final_parts and end is None:
        states = Counter(str(e.status) for e in final_parts)
        detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return {"state": "running", "detail": f"step {final_parts[0].eval_step}: {detail}"}
    if end is None:
        training = "finished" if any(e["event"] == "finished" for e in events) else "running"
        waits = "eval parts of the checkpoints" if training == "finished" else "training"
        return {"state": "pending", "detail": f"after the {waits}"}
    code, why = end
    if code == ExitCode.PREEMPTED:  # checkpointed; SLURM requeues the job
        return {"state": "pending", "detail": f"the run was preempted ({why}); it continues "
                "when SLURM requeues it, or with `orch resume`"}  # fmt: skip
    spec = read_json_or_none(rundir.spec_json) or {}
    if spec.get("evaluation", {}).get("final_full") is False:
        return {"state": "not requested", "detail": "evaluation.final_full = false"}
    if not any(e["event"] == "finished" for e in events):
        return {"state": "not run", "detail": f"training did not finish ({why})"}
    if not rundir.complete_checkpoints():
        return {"state": "not run", "detail": f"no checkpoint was saved ({why})"}
    if failed:
        last = failed[-1]
        where = "final" if last.step is None else f"step {last.step}"
        parts = f"{len(failed)} eval part{'s' if len(failed) > 1 else ''} failed"
        cause = "no checkpoint was fully evaluated" if not final_parts else "the final eval failed"
        return {"state": "not run", "detail": f"{cause} ({parts}; the last, {where}/"
                f"{last.dataset}: {last.reason or 'no reason recorded'})"}  # fmt: skip
    return {"state": "not run", "detail": f"the controller ended with exit {code}: {why}"}


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
    ckpts = status["checkpoints"]
    weights_only = sorted(set(ckpts) - set(status["resumable"]))
    table.add_row(
        "checkpoints",
        (", ".join(map(str, ckpts)) or "none")
        + (f" (weights only: {', '.join(map(str, weights_only))})" if weights_only else ""),
    )
    disk = status["disk"]
    removed = status["removed_by_retention"]
    table.add_row(
        "disk",
        f"{human_bytes(disk['run_bytes'])} in the run directory, "
        f"{human_bytes(disk['checkpoints_bytes'])} of it checkpoints"
        + (f"; retention removed {removed} (logs/retention.jsonl)" if removed else ""),
    )
    parts = status["eval_parts"]
    table.add_row("eval parts", ", ".join(f"{k} {v}" for k, v in sorted(parts.items())) or "none")
    best = status["best"]
    table.add_row(
        "best", f"step {best['step']} ({best['metric']} {best['value']:.4f})" if best else "none"
    )
    final = status["final_state"]
    table.add_row("final", f"{final['state']} — {final['detail']}")
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

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
            "restart_causes": restart_causes(events, metrics),
            "nodes": rank_nodes(starts[-1]) if starts else [],
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
        "eval_attempts": eval_attempts(rundir),
        "best": read_json_or_none(rundir.best),
        "final": final["overall"] if final else None,
        "final_state": final_state(rundir, events, final),
    }


# ---- where training ran, why its worker group restarted, where eval parts ran ---------------


def _node(worker: dict[str, Any]) -> str:
    return str(worker.get("node_name") or worker.get("node_ip") or str(worker.get("node_id"))[:8])


def rank_nodes(started: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of a ``started`` event's worker group, each with its ranks (in node order)."""
    nodes: dict[str, dict[str, Any]] = {}
    for w in started.get("workers", []):
        entry = nodes.setdefault(_node(w), {"node": _node(w), "node_id": w.get("node_id"),
                                            "ranks": []})  # fmt: skip
        entry["ranks"].append(w.get("rank"))
    return list(nodes.values())


def restart_causes(
    events: list[dict[str, Any]], metrics: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One record per worker group after the first (logs/train_events.jsonl): the step it
    resumed at, the last step reported before it, and why: the ``worker_group_failed`` events
    Ray Train's failures left since the previous start (nodes lost, else the first error), or
    a new controller (``orch resume``, a requeue) when there is none."""
    out: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for e in events:
        if e["event"] == "worker_group_failed":
            failures.append(e)
        if e["event"] != "started":
            continue
        if previous is not None:
            cause = _cause([*failures, e])
            since = failures[0]["time"] if failures else e["time"]
            reported = [m["step"] for m in metrics if previous["time"] <= m["time"] <= since]
            out.append({
                "step": e["step"],
                "time": e["time"],
                "resumed_from": e.get("resumed_from"),
                "last_reported_step": max(reported, default=previous["step"]),
                "cause": cause,
                "lost_nodes": sorted({str(n.get("node_name") or n.get("node_id"))
                                      for f in [*failures, e] for n in f.get("lost_nodes", [])}),
                "failed_at": failures[0]["time"] if failures else None,
            })  # fmt: skip
        previous, failures = e, []
    return out


def _cause(records: list[dict[str, Any]]) -> str:
    """``records``: the failure events since the previous start, then the new start (its
    ``lost_nodes``: the previous group's nodes Ray had declared dead by then)."""
    failures = [r for r in records if r["event"] == "worker_group_failed"]
    if not failures and not records[-1].get("lost_nodes"):
        return "a new controller started it (orch resume, a requeue or a resubmission)"
    lost = {}
    for f in records:
        for n in f.get("lost_nodes", []):
            lost[str(n.get("node_name") or n.get("node_id"))] = n.get("ranks", [])
    if lost:
        return "; ".join(
            f"node {name} lost (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})"
            for name, ranks in sorted(lost.items())
        )
    errors = failures[0].get("errors", {})
    rank, error = min(errors.items(), key=lambda kv: int(kv[0])) if errors else ("?", "")
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "no error")
    return f"rank {rank} failed: {first[:300]}"


def eval_attempts(rundir: RunDir) -> list[dict[str, Any]]:
    """Every attempt of every eval part that said where it ran (a Ray task's part log names
    its node, eval_backends/ray_tasks.EVAL_NODE; a SLURM part's names its job's stderr, where
    the part names its node, eval_backends/slurm_jobs.part_node): part, attempt, node, outcome
    (an attempt before the ledger's latest failed; the latest has the ledger's status)."""
    from orchestrator.eval_backends.ray_tasks import EVAL_NODE
    from orchestrator.eval_backends.slurm_jobs import part_node

    def node_of(log: Path) -> str | None:
        text = log.read_text(errors="replace") if log.is_file() else ""
        found = EVAL_NODE.search(text)
        return found[2] if found else part_node(text)

    out: list[dict[str, Any]] = []
    for e in sorted(Ledger(rundir).entries.values(), key=lambda e: (e.step is None, e.step or 0,
                                                                      e.dataset)):  # fmt: skip
        for attempt in range(1, e.attempt + 1):
            node = node_of(rundir.eval_log(e.step, e.dataset, attempt))
            if node is None:
                continue
            outcome = str(e.status) if attempt == e.attempt else "failed"
            part = f"{'final' if e.step is None else e.step}/{e.dataset}"
            out.append({"part": part, "attempt": attempt, "node": node, "outcome": outcome})
    return out


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
    if tr.get("nodes"):
        table.add_row("nodes", ", ".join(
            f"{n['node']}: rank{'s' if len(n['ranks']) > 1 else ''} "
            f"{', '.join(map(str, n['ranks']))}" for n in tr["nodes"]
        ))  # fmt: skip
    for r in tr.get("restart_causes", []):
        after = (
            f" after {r['time'] - r['failed_at']:.0f} s" if r.get("failed_at") is not None else ""
        )
        table.add_row(
            "restart",
            f"worker group restarted at step {r['last_reported_step']}: {r['cause']}; "
            f"running again{after}, from step {r['step']}",
        )
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
    attempts = status.get("eval_attempts", [])
    if attempts:
        table.add_row("eval nodes", eval_nodes_line(attempts))
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


def eval_nodes_line(attempts: list[dict[str, Any]]) -> str:
    """Per node, how many eval attempts ran there and how they ended; failed ones named."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_node.setdefault(a["node"], []).append(a)
    shown = []
    for node, runs in sorted(by_node.items()):
        counts = Counter(a["outcome"] for a in runs)
        line = f"{node}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        failed = [f"{a['part']} (attempt {a['attempt']})" for a in runs if a["outcome"] == "failed"]
        shown.append(line + (f" [{', '.join(failed)}]" if failed else ""))
    return "; ".join(shown)


def log_files(rundir: RunDir, evals: bool) -> list[Path]:
    files = [rundir.logs / "controller.log"]
    if evals:
        files += sorted((rundir.logs / "eval").glob("*/*.log"))
    return [f for f in files if f.is_file()]

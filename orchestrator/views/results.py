"""`orch results`: everything is recomputed from the run directory (no tracker needed)."""

from __future__ import annotations

from typing import Any

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.layout import RunDir, read_json_or_none


def _block(b: dict[str, Any]) -> dict[str, Any]:
    return {"loss": float(b["loss"]), "accuracy": float(b["accuracy"]), "n": int(b["n"])}


def step_record(merged: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": int(merged["step"]),
        "partial": bool(merged["partial"]),
        "datasets": {n: _block(v) for n, v in merged["datasets"].items()},
        "overall": _block(merged["overall"]),
        "missing": dict(merged.get("missing") or {}),
        "tasks": {t: dict(v["metrics"]) for t, v in (merged.get("tasks") or {}).items()},
    }


def collect(rundir: RunDir) -> dict[str, Any]:
    """The run's results as one JSON-able object (the documented `orch results --json` shape)."""
    steps = []
    for path in sorted(rundir.eval_dir.glob("step_*.json")):
        if ckpt.step_of(path.with_suffix("")) is None:
            continue
        merged = read_json_or_none(path)
        if merged is not None:
            steps.append(step_record(merged))
    best = read_json_or_none(rundir.best)
    final = read_json_or_none(rundir.final)
    return {
        "run": rundir.name,
        "run_dir": str(rundir.path),
        "best": (
            {
                "step": int(best["step"]),
                "metric": str(best["metric"]),
                "value": float(best["value"]),
            }
            if best
            else None
        ),
        "steps": steps,
        "final": step_record(final) if final else None,
    }


def render(results: dict[str, Any], show_best: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    names = sorted({d for s in results["steps"] for d in s["datasets"]})
    table = Table(title=f"{results['run']}  ({results['run_dir']})")
    table.add_column("step", justify="right")
    for n in names:
        table.add_column(f"{n} acc", justify="right")
    table.add_column("overall acc", justify="right")
    table.add_column("overall loss", justify="right")
    table.add_column("n", justify="right")
    best_step = results["best"]["step"] if results["best"] else None

    def row(label: str, rec: dict[str, Any]) -> list[str]:
        cells = [label]
        for n in names:
            d = rec["datasets"].get(n)
            cells.append(f"{d['accuracy']:.4f}" if d else "missing")
        o = rec["overall"]
        return [*cells, f"{o['accuracy']:.4f}", f"{o['loss']:.4f}", str(o["n"])]

    for s in results["steps"]:
        mark = " *" if s["step"] == best_step else ""
        table.add_row(*row(f"{s['step']}{mark}", s))
    if results["final"]:
        table.add_row(*row(f"final ({results['final']['step']})", results["final"]), style="bold")
    console.print(table)
    for s in results["steps"]:
        for task, metrics in s.get("tasks", {}).items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            console.print(f"step {s['step']} imported task {task}: {shown}")
    if not show_best:
        return
    if results["best"]:
        b = results["best"]
        console.print(f"best: step {b['step']} ({b['metric']} = {b['value']:.4f})")
    else:
        console.print("best: none yet")

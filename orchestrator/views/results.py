"""`orch results`: everything is recomputed from the run directory (no tracker needed)."""

from __future__ import annotations

from typing import Any

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.layout import RunDir, read_json_or_none
from orchestrator.contract.records import MergedStep, Scores


def _block(s: Scores) -> dict[str, Any]:
    """A dataset's (or overall's) metrics: every metric it reports, its n and the stderrs."""
    return {**s.values, "n": s.n, "stderr": dict(s.stderr)}


def step_record(merged: dict[str, Any]) -> dict[str, Any]:
    """One merged step in the `orch results --json` shape (schema 1 and 2 files alike)."""
    rec = MergedStep.from_json(merged)
    return {
        "step": rec.step,
        "partial": rec.partial,
        "datasets": {n: _block(v) for n, v in rec.datasets.items()},
        "overall": _block(rec.overall),
        "missing": dict(rec.missing),
        "tasks": {t: dict(v["metrics"]) for t, v in rec.tasks.items()},
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


def _columns(results: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(dataset, metric) columns (every metric each dataset reports, loss last) and the
    overall metrics, from what the records hold: nothing here names a metric."""
    records = [*results["steps"], *([results["final"]] if results["final"] else [])]

    def ordered(blocks: list[dict[str, Any]]) -> list[str]:
        seen: dict[str, None] = {}
        for b in blocks:
            seen.update(dict.fromkeys(k for k in b if k not in ("n", "stderr", "n_by_metric")))
        return sorted(seen, key=lambda m: (m == "loss", list(seen).index(m)))

    names = sorted({d for r in records for d in r["datasets"]})
    cols = [
        (d, m)
        for d in names
        for m in ordered([r["datasets"][d] for r in records if d in r["datasets"]])
    ]
    return cols, ordered([r["overall"] for r in records])


def _cell(block: dict[str, Any] | None, metric: str) -> str:
    if block is None:
        return "missing"
    value = block.get(metric)
    return "-" if value is None or value != value else f"{value:.4f}"


def render(results: dict[str, Any], show_best: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cols, overall = _columns(results)
    table = Table(title=f"{results['run']}  ({results['run_dir']})")
    table.add_column("step", justify="right")
    for d, m in cols:
        table.add_column(f"{d} {m}", justify="right")
    for m in overall:
        table.add_column(f"overall {m}", justify="right")
    table.add_column("n", justify="right")
    best_step = results["best"]["step"] if results["best"] else None

    def row(label: str, rec: dict[str, Any]) -> list[str]:
        cells = [label, *(_cell(rec["datasets"].get(d), m) for d, m in cols)]
        cells += [_cell(rec["overall"], m) for m in overall]
        return [*cells, str(rec["overall"]["n"])]

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

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
        "primary": primary_metrics(rundir),
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


def primary_metrics(rundir: RunDir) -> dict[str, str]:
    """Each dataset's primary metric: the first it declares (its ``metrics``, or its kind's
    defaults). {} for a run whose spec does not say (written before metrics were declared)."""
    from orchestrator.contract.errors import OrchError

    try:
        spec = rundir.read_spec()
    except (OrchError, ValueError, KeyError):
        return {}
    return {d: spec.declared_metrics(d)[0] for d in spec.datasets}


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


def select_columns(
    results: dict[str, Any], metric: str | None = None, every: bool = False
) -> tuple[list[tuple[str, str]], list[str]]:
    """The table's (dataset, metric) columns and overall metrics: every metric (``every``), one
    metric for each dataset that reports it (``metric``), or by default each dataset's primary
    metric, with the overall of each primary metric."""
    cols, overall = _columns(results)
    if every:
        return cols, overall
    if metric is not None:
        chosen = [(d, m) for d, m in cols if m == metric]
        if not chosen and metric not in overall:
            known = sorted({m for _, m in cols} | set(overall))
            raise ValueError(f"no dataset reports {metric!r}; metrics of this run: {known}")
        return chosen, [m for m in overall if m == metric]
    primary = results.get("primary") or {}
    first: dict[str, str] = {}
    for d, m in cols:  # without a spec: a dataset's first metric (its loss comes last)
        first.setdefault(d, m)
    chosen = [(d, m) for d, m in cols if m == primary.get(d, first.get(d))]
    shown = dict.fromkeys(m for _, m in chosen)
    return chosen, [m for m in overall if m in shown]


CELL = 9  # a value column: "0.1234" and its padding


def render(
    results: dict[str, Any],
    show_best: bool = True,
    metric: str | None = None,
    every: bool = False,
) -> None:
    """A table with a row per step when its columns fit the terminal; else one row per
    (dataset, metric) and a column per step, the latest steps that fit (and the best one)."""
    from rich.console import Console

    console = Console()
    cols, overall = select_columns(results, metric, every)
    what = "every metric" if every else (metric or "each dataset's primary metric")
    if (len(cols) + len(overall) + 2) * CELL <= console.width:
        table = _by_step(results, cols, overall, what)
    else:
        table = _by_dataset(results, cols, overall, what, console.width)
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


def _table(results: dict[str, Any], title: str) -> Any:
    from rich import box
    from rich.table import Table

    return Table(
        title=title, caption=results["run_dir"], box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False
    )


def _by_step(
    results: dict[str, Any], cols: list[tuple[str, str]], overall: list[str], what: str
) -> Any:
    table = _table(results, f"{results['run']}: {what}")
    table.add_column("step", justify="right", no_wrap=True)
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
        table.add_row(*row(f"final {results['final']['step']}", results["final"]), style="bold")
    return table


def _by_dataset(
    results: dict[str, Any],
    cols: list[tuple[str, str]],
    overall: list[str],
    what: str,
    width: int,
) -> Any:
    """Many datasets: a row each, the steps across. An overall row only for a metric that
    several datasets report (else it repeats that dataset's row)."""
    reporting = {m: sum(1 for _, c in cols if c == m) for m in overall}
    overall = [m for m in overall if reporting[m] > 1]
    labels = [f"{d} {m}" for d, m in cols] + [f"overall {m}" for m in overall]
    label_width = max((len(x) for x in labels), default=8) + 1
    steps = results["steps"]
    best_step = results["best"]["step"] if results["best"] else None
    room = max(1, (width - label_width) // CELL - (1 if results["final"] else 0))
    shown = steps[-room:]
    if best_step is not None and all(s["step"] != best_step for s in shown):
        best = next((s for s in steps if s["step"] == best_step), None)
        if best is not None:
            shown = [best, *shown[len(shown) - room + 1 :]] if room > 1 else [best]
    hidden = len(steps) - len(shown)
    note = f"; {hidden} earlier step(s) in --json" if hidden else ""
    table = _table(results, f"{results['run']}: {what}{note}")
    table.add_column("dataset metric", no_wrap=True)
    records = [(f"{s['step']}{' *' if s['step'] == best_step else ''}", s) for s in shown]
    if results["final"]:
        records.append((f"final {results['final']['step']}", results["final"]))
    for label, _ in records:
        table.add_column(label, justify="right", no_wrap=True)
    for (d, m), label in zip(cols, labels, strict=False):
        table.add_row(label, *(_cell(rec["datasets"].get(d), m) for _, rec in records))
    for m in overall:
        table.add_row(f"overall {m}", *(_cell(rec["overall"], m) for _, rec in records))
    table.add_row("n", *(str(rec["overall"]["n"]) for _, rec in records))
    return table

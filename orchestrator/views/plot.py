"""`orch results --plot`: per-dataset curves over steps, one panel per metric (three to a row),
as a PNG (no tracker needed). The metrics come from the records, not from this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PER_ROW = 3


def plot_results(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    from orchestrator.views.results import _columns

    steps = results["steps"]
    _, metrics = _columns(results)
    metrics = metrics or ["loss"]
    names = sorted({d for s in steps for d in s["datasets"]})
    rows, per_row = -(-len(metrics) // PER_ROW), min(PER_ROW, len(metrics))
    fig, axes = plt.subplots(rows, per_row, figsize=(5.5 * per_row, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    best = results["best"]["step"] if results["best"] else None
    final = results["final"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for name in [*names, "overall"]:
            xs, ys = [], []
            for s in steps:
                block = s["overall"] if name == "overall" else s["datasets"].get(name)
                if block is not None and metric in block:
                    xs.append(s["step"])
                    ys.append(block[metric])
            if not xs:
                continue
            style = {"linewidth": 2.5, "color": "black"} if name == "overall" else {"marker": "o"}
            ax.plot(xs, ys, label=name, **style)
        if best is not None:
            ax.axvline(best, linestyle="--", color="grey", label="best")
        if final and metric in final["overall"]:
            ax.scatter(
                [final["step"]],
                [final["overall"][metric]],
                marker="*",
                s=200,
                color="red",
                zorder=5,
                label="final (full eval)",
            )
        ax.set(title=f"eval {metric}", xlabel="training step")
        ax.legend(fontsize=8)
    fig.suptitle(results["run"])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

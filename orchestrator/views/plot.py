"""`orch results --plot`: per-dataset curves over steps, as a PNG (no tracker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_results(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    steps = results["steps"]
    names = sorted({d for s in steps for d in s["datasets"]})
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in [*names, "overall"]:
        xs, acc, loss = [], [], []
        for s in steps:
            block = s["overall"] if name == "overall" else s["datasets"].get(name)
            if block is not None:
                xs.append(s["step"])
                acc.append(block["accuracy"])
                loss.append(block["loss"])
        style = {"linewidth": 2.5, "color": "black"} if name == "overall" else {"marker": "o"}
        acc_ax.plot(xs, acc, label=name, **style)
        loss_ax.plot(xs, loss, label=name, **style)
    if results["best"]:
        for ax in (acc_ax, loss_ax):
            ax.axvline(results["best"]["step"], linestyle="--", color="grey", label="best")
    final = results["final"]
    if final:
        acc_ax.scatter(
            [final["step"]],
            [final["overall"]["accuracy"]],
            marker="*",
            s=200,
            color="red",
            zorder=5,
            label="final (full eval)",
        )
    acc_ax.set(title="eval accuracy", xlabel="training step", ylim=(0, 1.02))
    loss_ax.set(title="eval loss", xlabel="training step")
    acc_ax.legend(fontsize=8)
    fig.suptitle(results["run"])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

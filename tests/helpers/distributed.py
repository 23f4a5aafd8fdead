"""Multi-rank scripts for tests: N real processes in one torch.distributed group on gloo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT, repo_env


def live_gloo_threads() -> int:
    """How many gloo threads this process runs (Linux): 0 once every group it opened is gone,
    since destroying a group joins them."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # that thread ended while we looked
            continue
    return sum(1 for name in names if "gloo" in name)


def run_ranks(script: Path, world: int, timeout: float = 600) -> list[str]:
    """Run ``script`` as ranks 0..world-1 of one group and return each rank's stdout.

    Each rank gets ``sys.argv[1:] == [store, rank, world]``: ``store`` is a file to rendezvous
    through (``init_method=f"file://{store}"``), so no TCP port is picked in advance and lost
    to another process in between. Fails, with the rank's stderr, on any non-zero exit: a
    signal too (-6 is SIGABRT).
    """
    store = script.with_suffix(".store")
    store.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(store), str(rank), str(world)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=repo_env(),
        )
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n{err[-3000:]}"
    return [out for out, _ in outputs]

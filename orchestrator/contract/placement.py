"""Where a run's ranks ran, as both planes read it: the ``started`` train events' ``workers``
lists (written by rank 0, workers/train.py) against the nodes Ray has alive."""

from __future__ import annotations

from typing import Any

from orchestrator.contract.layout import RunDir, read_jsonl


def lost_nodes(paths: RunDir) -> list[dict[str, Any]]:
    """The nodes of the last started worker group (the last ``started`` event) that Ray no
    longer has alive: name, id and the ranks that ran there. Call it from a process joined to
    the run's Ray cluster. Ray Train reports a failure (the ``worker_group_failed`` event) as
    soon as a rank is unreachable, which can be before Ray has declared its node dead; by the
    time the next worker group starts it usually has, so both events carry this list."""
    import ray

    starts = [e for e in read_jsonl(paths.train_events) if e.get("event") == "started"]
    if not starts:
        return []
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    lost: dict[str, dict[str, Any]] = {}
    for w in starts[-1].get("workers", []):
        node = str(w.get("node_id"))
        if node not in alive:
            entry = lost.setdefault(
                node, {"node_id": node, "node_name": w.get("node_name"), "ranks": []}
            )
            entry["ranks"].append(w.get("rank"))
    return list(lost.values())

"""Does the job's training fit the cluster it is sent to? Checked before the run starts.

Ray Train places ``training.num_workers`` workers of ``training.cpus_per_worker`` CPUs (and one
GPU each with ``training.use_gpu``), every worker on one node; a request that no node layout can
hold never starts: Ray waits for resources forever. So the check is per node (how many workers
each node holds), against the cluster's total resources, not what is free now (a busy cluster
only makes the run wait). The nodes come from a Ray head (``ray_nodes``) or from the SLURM
allocation that `orch submit --cluster slurm` asks for (``slurm_nodes``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.contract.errors import ClusterError, SpecError
from orchestrator.contract.spec import JobSpec


@dataclass(frozen=True)
class Node:
    name: str
    cpus: float
    gpus: float


def workers_that_fit(spec: JobSpec, node: Node) -> int:
    tr = spec.training
    n = math.floor(node.cpus / tr.cpus_per_worker + 1e-9)
    if tr.use_gpu:
        n = min(n, math.floor(node.gpus + 1e-9))
    return max(n, 0)


def _describe(nodes: Sequence[Node], use_gpu: bool) -> str:
    shown = ", ".join(
        f"{n.name}: {n.cpus:g} CPUs" + (f" {n.gpus:g} GPUs" if use_gpu else "") for n in nodes[:8]
    )
    more = f", ... ({len(nodes) - 8} more)" if len(nodes) > 8 else ""
    return f"{len(nodes)} node(s) ({shown}{more})"


def check_fits(spec: JobSpec, nodes: Sequence[Node], where: str, fix: str) -> None:
    """Raise SpecError naming the settings and the cluster's capacity when training (or one
    eval part, with evaluation.backend = "ray") can never be placed on ``nodes``."""
    tr, ev = spec.training, spec.evaluation
    fit = sum(workers_that_fit(spec, n) for n in nodes)
    if fit < tr.num_workers:
        each = f"{tr.cpus_per_worker:g} CPU(s)" + (" and 1 GPU" if tr.use_gpu else "")
        asked = f"training.num_workers = {tr.num_workers} (each {each}: training.cpus_per_worker"
        asked += ", training.use_gpu)" if tr.use_gpu else ")"
        raise SpecError(
            f"{asked} does not fit {where}: its {_describe(nodes, tr.use_gpu)} hold at most "
            f"{fit} such worker(s), so the run would wait for resources forever; lower "
            f"training.num_workers or training.cpus_per_worker, or {fix}"
        )
    if ev.backend == "ray":
        largest = max((n.cpus for n in nodes), default=0.0)
        if ev.cpus_per_task > largest + 1e-9:
            raise SpecError(
                f"evaluation.cpus_per_task = {ev.cpus_per_task:g} does not fit {where}: its "
                f"largest node has {largest:g} CPUs, so no eval part could ever start; lower "
                f"evaluation.cpus_per_task, or {fix}"
            )


def ray_nodes(address: str) -> list[Node]:
    """The alive nodes of the Ray cluster whose dashboard is ``address`` (state API; Ray's
    token is sent when token authentication is on, see launch/ray_job.enable_token_auth)."""
    from ray.util.state import list_nodes

    try:
        states = list_nodes(
            address=address, detail=True, limit=10_000, raise_on_missing_output=False
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot list the nodes of the Ray cluster at {address}: {e}") from e
    nodes = []
    for s in states:
        if s.state != "ALIVE":
            continue
        total = s.resources_total or {}
        name = s.node_name or s.node_ip or s.node_id[:8]
        nodes.append(Node(name, float(total.get("CPU", 0)), float(total.get("GPU", 0))))
    return sorted(nodes, key=lambda n: n.name)


def slurm_nodes(nodes: int, cpus_per_task: int, gpus_per_node: int) -> list[Node]:
    """The nodes of the allocation `orch submit --cluster slurm` asks for: the Ray head and
    workers it starts take --cpus-per-task CPUs and --gpus-per-node GPUs on each node."""
    return [Node(f"node {i + 1}", float(cpus_per_task), float(gpus_per_node)) for i in range(nodes)]

"""The per-rank training loop, run by Ray Train workers; DeepSpeed owns the optimiser step.

It reads the resolved spec from the run directory, resumes from the latest complete checkpoint
if there is one (which is how a restarted worker group continues after a failure), trains, writes
train metrics to logs/train_metrics.jsonl (rank 0) and checkpoints every N steps. It never
launches evaluation or talks to a tracker: the controller watches the files it writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.deepspeed import build_deepspeed_config
from orchestrator.contract.kinds import get_kind
from orchestrator.contract.layout import RunDir, append_jsonl
from orchestrator.contract.placement import lost_nodes
from orchestrator.contract.spec import JobSpec
from workers.data.loader import Plan, make_loader
from workers.data.microbatch import Batcher, StepBatch, load_train_data
from workers.data.mixture import MixturePosition
from workers.evaluate import checkpoint_digest
from workers.guard import Guard
from workers.models.classifier import (
    ClassifierSnapshot,
    VLMClassifier,
    add_lora,
    build_classifier,
    compile_blocks,
    save_classifier,
    snapshot_classifier,
)
from workers.perf import Throughput

logger = logging.getLogger("orch.train")


def preempt_requested(paths: RunDir, rank: int) -> bool:
    """Rank 0 looks for the request file; the guard's all-reduce gives every rank the answer,
    so all ranks leave the loop after the same step."""
    return rank == 0 and paths.preempt_request.exists()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: {"run_dir": str}."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    train_rank(
        RunDir(Path(config["run_dir"])),
        ctx.get_world_rank(),
        ctx.get_world_size(),
        ctx.get_local_world_size(),
        ray.train.torch.get_device(),
        lambda: worker_placements(ctx),
    )


def train_rank(
    paths: RunDir,
    rank: int,
    world: int,
    local_world: int,
    device: torch.device,
    placements: Callable[[], list[dict[str, Any]]],
) -> None:
    """One rank's training, from the run directory's spec to the end (or a preemption), in a
    process group that is already there (one rank needs none). ``placements`` says where every
    rank runs (a collective: every rank calls it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec = paths.read_spec()
    tr = spec.training
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s: %(message)s")
    torch.set_num_threads(max(1, int(tr.cpus_per_worker)))
    torch.manual_seed(tr.seed)

    placement = placements()
    data = load_train_data(spec)
    max_steps = spec.training.steps_for({n: len(s) for n, s in data.items()})
    engine, scheduler = build_engine(spec, world, max_steps)
    step, position, latest = resume(engine, paths, tr.resume_from, rank, world, placement)
    plan = Plan(
        sizes={n: len(s) for n, s in data.items()},
        weights={n: d.mix_weight for n, d in spec.trained.items()},
        seed=tr.seed,
        start_step=step,
        max_steps=max_steps,
        grad_accum=tr.grad_accum,
        global_micro=tr.batch_size * world,
        rank=rank,
        world=world,
        position=position,
        **token_plan(spec, data, world),
    )
    loader_workers = resolve_loader_workers(tr.loader_workers, local_world, tr.cpus_per_worker)
    if rank == 0:
        logger.info("%d loader worker(s) per training worker", loader_workers)
    batches = iter(make_loader(plan, Batcher(spec, data), loader_workers, tr.prefetch_batches))
    loop = Loop(spec, paths, engine, scheduler, batches, rank, device)
    loop.data_position = MixturePosition.from_json(position) if position else None
    loop.guard = Guard(paths.forensics, tr.on_nonfinite, tr.max_skipped, rank, latest)
    loop.run(step, max_steps)
    # Finished or preempted, every rank is here: close the process group (workers/distributed.py).
    from workers.distributed import close_process_group

    close_process_group(engine)


def token_plan(spec: JobSpec, data: dict[str, Any], world: int) -> dict[str, Any]:
    """The Plan's packing-by-tokens fields (training.batch_tokens), none without it: each packed
    dataset's row lengths, a column of its index (read a row at a time by each process)."""
    tr = spec.training
    if tr.pack_rows is None:
        return {}
    packed: dict[str, Any] = {}
    for name in spec.token_packed:
        lengths = get_kind(spec.datasets[name].kind).token_lengths(  # type: ignore[attr-defined]
            spec, name, data[name]
        )
        packed[name] = lengths  # an index's Column pickles as its path
    budget = tr.pack_rows * tr.pack_max_tokens * world
    return {
        "packed": packed,
        "pack_rows": tr.pack_rows,
        "pack_max_tokens": tr.pack_max_tokens,
        "pack_max_images": tr.pack_max_images,
        "buffer_tokens": budget if tr.pack_buffer_tokens is None else tr.pack_buffer_tokens,
    }


def worker_placements(ctx: Any) -> list[dict[str, Any]]:
    """Where every rank runs, rank by rank (all-gathered, so rank 0 can record it): its Ray
    node id and name (`ray start --node-name`; by default its IP), node IP, hostname, SLURM
    node (in an allocation), node rank and local rank, pid.
    Ray Train numbers nodes (node_rank, local_rank) by IP: two raylets on one address count as
    one node there, though their node ids differ."""
    import socket

    import ray

    node_id = ray.get_runtime_context().get_node_id()
    names = [n.get("NodeName") for n in ray.nodes() if n.get("NodeID") == node_id]
    me = {
        "rank": ctx.get_world_rank(),
        "local_rank": ctx.get_local_rank(),
        "node_rank": ctx.get_node_rank(),
        "node_id": node_id,
        "node_name": names[0] if names and names[0] else ray.util.get_node_ip_address(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        # Inside a SLURM allocation, the SLURM node this rank's Ray node was started on.
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "pid": os.getpid(),
    }
    if not dist.is_initialized():
        return [me]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, me)
    return [dict(g) for g in gathered]


def build_engine(spec: JobSpec, world: int, max_steps: int) -> tuple[Any, Any]:
    """The model (LoRA, gradient checkpointing, compilation as the spec says), AdamW, the
    schedule, and the DeepSpeed engine around them."""
    import deepspeed

    tr, m = spec.training, spec.model
    model = build_classifier(m.path, spec.num_labels, m.pooling, m.attn_implementation)
    if m.gradient_checkpointing:
        model.vlm.gradient_checkpointing_enable(  # type: ignore[operator]
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if m.lora is not None:
        lora = m.lora
        trainable = add_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        logger.info(
            "LoRA r=%d on %s: %d trainable parameters", lora.r, lora.target_modules, trainable
        )
    if m.compile:
        compile_blocks(model.vlm)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable_params, lr=tr.lr, weight_decay=tr.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, max_steps))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=build_deepspeed_config(tr, world),
        dist_init_required=False,
    )
    return engine, scheduler


def resume(
    engine: Any,
    paths: RunDir,
    resume_from: Path | None,
    rank: int,
    world: int,
    placement: list[dict[str, Any]] | None = None,
) -> tuple[int, dict[str, Any] | None, Path | None]:
    """(step, data position, checkpoint) to continue from: this run's own latest complete
    checkpoint first (a worker-group restart or a requeue), else training.resume_from. Rank 0
    records the start in logs/train_events.jsonl, with where each rank runs (``placement``)."""
    step, position = 0, None
    latest = ckpt.latest_resumable(paths.checkpoints) or resume_point(resume_from)
    if latest is not None:
        engine.load_checkpoint(str(latest), tag=ckpt.DEEPSPEED_TAG)
        state = json.loads((latest / ckpt.TRAINER_STATE).read_text())
        step, position = int(state["step"]), state["data_position"]
        logger.info("resumed from %s at step %d", latest, step)
    if rank == 0:
        append_jsonl(
            paths.train_events,
            {
                "event": "started",
                "step": step,
                "world_size": world,
                "resumed_from": str(latest) if latest else None,
                "workers": placement or [],
                "lost_nodes": lost_nodes(paths),
            },
        )
    return step, position, latest


class Loop:
    """The optimiser steps of one rank, read top to bottom in ``run``."""

    def __init__(
        self,
        spec: JobSpec,
        paths: RunDir,
        engine: Any,
        scheduler: Any,
        batches: Iterator[StepBatch],
        rank: int,
        device: torch.device,
    ) -> None:
        self.spec, self.tr, self.paths = spec, spec.training, paths
        self.engine, self.scheduler, self.batches = engine, scheduler, batches
        self.rank, self.device = rank, device
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.dtype = torch.bfloat16 if self.tr.bf16 else torch.float32
        hf_config = engine.module.hf_config
        self.attn = str(hf_config._attn_implementation)
        self.stats = RunningStats(sorted(spec.trained))
        self.perf = Throughput(
            hf_config,
            spec.num_labels,
            int(hf_config.image_token_id),
            device,
            pack_max_tokens=self.tr.pack_max_tokens,
        )
        self.guard: Guard
        self.data_position: MixturePosition | None = None
        self.checkpointer = Checkpointer(
            engine, spec, paths, rank, asynchronous=spec.training.async_checkpoint
        )

    def run(self, step: int, max_steps: int) -> None:
        """Train to max_steps or a preemption; no checkpoint export is running when it returns
        or raises."""
        try:
            self._run(step, max_steps)
        except BaseException:
            self.checkpointer.abandon()
            raise

    def _run(self, step: int, max_steps: int) -> None:
        while step < max_steps:
            step += 1
            preempt = self.step(step)
            self.checkpointer.poll()
            if step % self.tr.log_every == 0 or step == max_steps:
                self.report(step)
            if preempt:
                # Preemption or a time limit: save where we are (unless this step was just
                # saved) and leave; the requeued job resumes from this checkpoint.
                target = ckpt.checkpoint_dir(self.paths.checkpoints, step)
                if not (target / ckpt.COMPLETE).exists():
                    self.save(step)
                self.checkpointer.wait()  # COMPLETE is written before the loop leaves
                if self.rank == 0:
                    append_jsonl(self.paths.train_events, {"event": "preempted", "step": step})
                logger.info("preempted at step %d: checkpoint saved, leaving", step)
                return
            if step % self.tr.checkpoint_every == 0 or step == max_steps:
                self.save(step)
        self.checkpointer.wait()  # the last checkpoint is complete before "finished"
        if self.rank == 0:
            append_jsonl(self.paths.train_events, {"event": "finished", "step": step})
        logger.info("training finished at step %d", step)

    def step(self, step: int) -> bool:
        """One optimiser step over grad_accum micro-batches; True when a preemption was asked
        for (every rank gets the same answer from the guard's all-reduce)."""
        engine, preempt, lr = self.engine, False, 0.0
        for micro in range(self.tr.grad_accum):
            t_data = time.perf_counter()
            batch = next(self.batches)
            assert batch.data_position is not None
            self.data_position = MixturePosition.from_json(batch.data_position)
            self.perf.add_step_batch(batch, time.perf_counter() - t_data)
            losses, correct, zero = forward_losses(
                engine, batch, self.device, self.dtype, self.attn
            )
            lr = float(self.scheduler.get_last_lr()[0])
            asked = preempt_requested(self.paths, self.rank)
            skip, preempt = self.guard.check_losses(
                step, micro, batch, losses, lr, self.device, asked
            )
            if skip:
                # Skipped: a zero loss over the parameters keeps DeepSpeed's accumulation
                # bookkeeping in step while the batch contributes no gradient.
                engine.backward(sum(p.sum() for p in engine.module.parameters()) * 0.0)
                engine.step()
                continue
            engine.backward(mean_loss(losses, batch.global_samples, self.world) + zero)
            if engine.is_gradient_accumulation_boundary() and step % self.tr.log_every == 0:
                self.guard.module_grad_norms = (step, largest_module_grad_norms(engine))
            engine.step()
            self.stats.add(batch.datasets, losses.detach(), correct)
        self.perf.step_done()
        self.guard.check_grad_norm(step, engine.get_global_grad_norm(), lr)
        return preempt

    def report(self, step: int) -> None:
        """Per-dataset loss and accuracy, throughput, the guard's counters: all-reduced, then
        one line in logs/train_metrics.jsonl (rank 0)."""
        row = self.stats.reduce_and_reset(self.device)
        row |= self.perf.reduce_and_reset()
        row |= {
            "skipped_batches": float(self.guard.skipped),
            "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "samples_per_s": row["n"] / row["report_s"],
        }
        if self.rank == 0:
            append_jsonl(self.paths.train_metrics, {"step": step, **row})

    def save(self, step: int) -> None:
        self.checkpointer.save(step, self.data_position)


def largest_module_grad_norms(engine: Any, top: int = 10) -> dict[str, float]:
    """Gradient norm of each module (its weight and bias together), the ``top`` largest, read
    between backward and step on every rank.

    Under ZeRO-1/2 each rank squares the gradient fragments it owns and one all-reduce of the
    per-parameter sums gives the full norms (DeepSpeed's ``safe_get_full_grad`` would all-reduce
    every full gradient, one collective per parameter). Without partitioning the local gradient
    is already the full one. ZeRO-3 goes through ``safe_get_full_grad`` (every rank, same
    order)."""
    from deepspeed.utils import safe_get_full_grad

    names: list[str] = []
    local: list[torch.Tensor] = []
    partitioned = False
    zero3 = False
    for name, p in engine.module.named_parameters():
        if not p.requires_grad:
            continue
        if hasattr(p, "ds_id"):
            zero3 = True
            grad = safe_get_full_grad(p)
            if grad is None:
                continue
            sq = grad.float().pow(2).sum()
        elif getattr(p, "_hp_grad", None) is None and p.grad is not None:
            sq = p.grad.float().pow(2).sum()
        elif hasattr(p, "_hp_mapping"):
            partitioned = True
            sq = _owned_grad_square(p)
        else:
            continue
        names.append(name)
        local.append(sq.to(torch.float64).reshape(()))
    if not local:
        return {}
    squares_t = torch.stack(local)
    if partitioned and not zero3 and dist.is_initialized():
        dist.all_reduce(squares_t)
    squares: dict[str, float] = {}
    for name, sq in zip(names, squares_t.tolist(), strict=True):
        module = name.rsplit(".", 1)[0]
        squares[module] = squares.get(module, 0.0) + float(sq)
    ranked = sorted(squares.items(), key=lambda kv: -kv[1] if math.isfinite(kv[1]) else -math.inf)
    nonfinite = [kv for kv in squares.items() if not math.isfinite(kv[1])]
    return {k: math.sqrt(v) for k, v in (nonfinite + ranked)[:top]}


def _owned_grad_square(p: Any) -> torch.Tensor:
    """Sum of squares of the gradient fragment of ``p`` this rank owns under ZeRO-1/2 (the
    fragment DeepSpeed's ``get_full_hp_grad`` contributes to its all-reduce)."""
    mapping = p._hp_mapping
    if mapping is None:
        return torch.zeros((), dtype=torch.float64)
    fragment = mapping.get_lp_grad_fragment(p._index_in_param_group).to(torch.float32).flatten()
    address = mapping.lp_fragment_address
    if p.view(-1).shape == fragment.shape:  # a full buffer (bf16 optimizer): only the owned part
        fragment = fragment.narrow(0, address.start, address.numel)
    return fragment.to(torch.float64).pow(2).sum()


def mean_loss(losses: torch.Tensor, global_samples: int | None, world: int) -> torch.Tensor:
    """The micro-batch's loss on this rank such that, averaged over the ranks (as DeepSpeed
    averages gradients), it is the mean over every sample of the micro-batch: the plain mean
    when every rank has the same count, else the sum over this rank's share of the count."""
    if global_samples is None or global_samples == world * losses.numel():
        return losses.mean()
    return losses.sum() * (world / global_samples)


def forward_losses(
    engine: Any, batch: StepBatch, device: torch.device, dtype: torch.dtype, attn: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample losses (in ``batch.ids`` order), whether each sample was right (as its kind
    defines it), and a zero term that ties placeholder parts into the graph (see KindPart)."""
    losses: list[torch.Tensor] = []
    correct: list[torch.Tensor] = []
    zero = torch.zeros((), device=device)
    for part in batch.parts:
        loss, ok = get_kind(part.kind).forward(engine, part.batch, device, dtype, attn)
        if part.placeholder:
            zero = zero + 0.0 * loss.sum()
        else:
            losses.append(loss)
            correct.append(ok)
    return torch.cat(losses), torch.cat(correct), zero


def resolve_loader_workers(setting: int | str, local_world: int, cpus_per_worker: float) -> int:
    """training.loader_workers, with "auto" resolved against this node's cores: one loader
    process per training worker when each has a core to spare, else none."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spare = (cores or 1) - local_world * math.ceil(cpus_per_worker)
    return 1 if spare >= local_world else 0


def resume_point(path: Path | None) -> Path | None:
    """training.resume_from as a complete checkpoint: given directly, or a run's latest."""
    if path is None:
        return None
    if (path / ckpt.COMPLETE).is_file():
        if not ckpt.resumable(path):
            raise FileNotFoundError(
                f"training.resume_from: {path} has no DeepSpeed state (removed by retention, "
                "training.keep_last); --init-from starts a new run from its weights"
            )
        return path
    latest = ckpt.latest_resumable(path / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"training.resume_from: no resumable checkpoint in {path}")
    return latest


def lr_lambda(spec: JobSpec, max_steps: int) -> Any:
    tr = spec.training

    def factor(i: int) -> float:  # i counts optimiser steps taken so far
        if i < tr.warmup_steps:
            return (i + 1) / tr.warmup_steps
        if tr.lr_schedule == "constant":
            return 1.0
        progress = (i - tr.warmup_steps) / max(1, max_steps - tr.warmup_steps)
        if tr.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class RunningStats:
    """Per-dataset sums of loss, correct and n since the last report, all-reduced over ranks."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.sums = torch.zeros(len(names), 3, dtype=torch.float64)

    def add(self, datasets: list[str], losses: torch.Tensor, correct: torch.Tensor) -> None:
        for name, loss, ok in zip(datasets, losses.tolist(), correct.tolist(), strict=True):
            i = self.names.index(name)
            self.sums[i] += torch.tensor([loss, float(ok), 1.0], dtype=torch.float64)

    def reduce_and_reset(self, device: torch.device) -> dict[str, float]:
        sums = self.sums.clone().to(device)  # .to() on CPU aliases; zero_() below must not
        if dist.is_initialized():
            dist.all_reduce(sums)
        sums = sums.cpu()
        self.sums.zero_()
        row: dict[str, float] = {}
        for name, (loss, correct, n) in zip(self.names, sums.tolist(), strict=True):
            if n > 0:
                row[f"{name}/loss"] = loss / n
                row[f"{name}/accuracy"] = correct / n
        total = sums.sum(0).tolist()
        row |= {"loss": total[0] / total[2], "accuracy": total[1] / total[2], "n": total[2]}
        return row


class CheckpointSpaceError(OSError):
    """The checkpoint's filesystem filled up while it was being written."""


class CheckpointExportError(RuntimeError):
    """A checkpoint's background export (hf/, trainer state, digest, COMPLETE, its event)
    failed. Unless only the event failed, the checkpoint has no COMPLETE marker, so nothing
    takes it for a checkpoint."""


# After a failed write, less free space than this (or than 5 % of a small filesystem) means the
# disk filled up: torch.save reports a full disk as "RuntimeError: [enforce fail at
# inline_container.cc] unexpected pos ...", without errno; safetensors as a SafetensorError
# ("I/O error: No space left on device"), which is neither an OSError nor a RuntimeError.
FULL_BELOW_BYTES = 16 << 20
WRITE_ERRORS: tuple[type[Exception], ...] = (OSError, RuntimeError, SafetensorError)


def disk_full(e: BaseException, paths: RunDir) -> bool:
    """Whether a write error means the checkpoints' filesystem is full."""
    if not isinstance(e, WRITE_ERRORS):
        return False
    disk = shutil.disk_usage(paths.checkpoints)
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    low = disk.free < min(FULL_BELOW_BYTES, disk.total // 20)
    return full or low or "No space left" in str(e)


@contextlib.contextmanager
def space_errors(paths: RunDir, step: int, target: Path, rank: int) -> Iterator[None]:
    """A full disk inside the block is a CheckpointSpaceError saying so, the partial checkpoint
    removed (never one that is complete: the controller may be evaluating it); the previous
    complete checkpoint is untouched and the run resumes from it. Other errors pass through."""
    try:
        yield
    except WRITE_ERRORS as e:
        if not disk_full(e, paths):
            raise
        free = shutil.disk_usage(paths.checkpoints).free
        if rank == 0 and target.exists() and not (target / ckpt.COMPLETE).exists():
            shutil.rmtree(target)  # never complete; gone, so that it frees what it took
        previous = ckpt.latest_resumable(paths.checkpoints)
        raise CheckpointSpaceError(
            errno.ENOSPC,
            f"no space left on the filesystem of {paths.checkpoints} while saving checkpoint "
            f"{step} ({free / 2**20:.1f} MB free; {type(e).__name__}: {e}). The previous "
            f"complete checkpoint ({previous.name if previous else 'none'}) is intact: free "
            "space or keep fewer checkpoints (training.keep_last, training.keep_weights), then "
            f"`orch resume {paths.path}`",
        ) from e


def save_checkpoint(
    engine: Any,
    spec: JobSpec,
    paths: RunDir,
    step: int,
    position: MixturePosition | None,
    rank: int,
) -> None:
    """One synchronous checkpoint (Checkpointer, asynchronous=False): returns once COMPLETE is
    written. A full disk is a CheckpointSpaceError (see space_errors)."""
    Checkpointer(engine, spec, paths, rank, asynchronous=False).save(step, position)


@dataclass
class _Completion:
    """What rank 0 writes after every rank's DeepSpeed state is on disk: hf/ (from the
    snapshot, when there is one; else it was written already), the trainer state, the digest,
    COMPLETE last, then the checkpoint event. Run inline, or in a thread."""

    step: int
    target: Path
    module: VLMClassifier
    source: Path
    datasets: dict[str, Any]
    trainer_state: dict[str, Any]
    snapshot: ClassifierSnapshot | None
    t_enter: float  # perf_counter() on entering the save
    t0: float  # after the first barrier: where total_s starts (as before ckpt_block_s existed)
    t_export: float  # every rank's DeepSpeed state on disk: what is left is the HF export's
    asynchronous: bool
    times: dict[str, float]
    thread: threading.Thread | None = None
    error: BaseException | None = None
    # Set by the loop when it continues (ckpt_block_s known): the event waits for it.
    block_known: threading.Event = field(default_factory=threading.Event)

    def write(self) -> None:
        t = time.perf_counter()
        if self.snapshot is not None:
            hf = self.target / ckpt.HF_DIR
            save_classifier(self.module, hf, self.source, self.datasets, self.snapshot)
            self.snapshot = None  # the CPU copy goes as soon as it is written
        atomic_write_json(self.target / ckpt.TRAINER_STATE, self.trainer_state)
        self.times["hf_export_s"] += time.perf_counter() - t
        # The weights' digest, once, here: every eval result of this checkpoint records it.
        digest = checkpoint_digest(self.target / ckpt.HF_DIR)
        atomic_write_json(
            self.target / ckpt.COMPLETE,
            {"step": self.step, "time": time.time(), "hf_digest": digest},
        )
        self.times["total_s"] = time.perf_counter() - self.t0

    def held(self, wait_s: float) -> None:
        """The loop continues now: how long it was held, and how much of that the HF export
        caused (it exists only for evaluation): waiting for the previous one, then everything
        after the DeepSpeed state (the copy and starting the thread, or the whole export)."""
        now = time.perf_counter()
        self.times["ckpt_block_s"] = now - self.t_enter
        self.times["hf_block_s"] = wait_s + now - self.t_export

    def log(self, paths: RunDir) -> None:
        append_jsonl(
            paths.train_events,
            {"event": "checkpoint", "step": self.step, "async": self.asynchronous} | self.times,
        )
        logger.info(
            "checkpoint %s complete (the loop waited %.3f s)",
            self.target.name, self.times["ckpt_block_s"],
        )  # fmt: skip

    def run_in_thread(self, paths: RunDir) -> None:
        try:
            self.write()
            self.block_known.wait()
            self.log(paths)
        # Kept, never dropped: Checkpointer.wait raises it in the loop (the run fails there).
        except BaseException as e:  # noqa: BLE001
            self.error = e


class Checkpointer:
    """Saves one rank's checkpoints, each into checkpoints/step_N/ (orchestrator/contract/
    checkpoint.py): the DeepSpeed state on every rank, then a barrier (every rank's state is on
    disk), then rank 0 writes hf/, the trainer state, the digest and COMPLETE, in that order.

    Synchronous: hf/ is written from the live model and the save returns after COMPLETE.
    Asynchronous (training.async_checkpoint): rank 0 copies the weights hf/ needs to CPU memory
    (inside the ZeRO-3 gather), and a thread writes hf/ from that copy, the trainer state, the
    digest and COMPLETE while training goes on. At most one export runs: the next save, the end
    of training, a preemption and an error path join it first (``wait``, ``abandon``), and its
    error is raised there. A crash in the middle leaves no COMPLETE: a partial checkpoint, as a
    crash of a synchronous save does.

    Every save's checkpoint event (logs/train_events.jsonl) says how long the loop was held
    (``ckpt_block_s``: from entering the save, waiting for the previous export included, to the
    loop continuing) beside ``deepspeed_s``, ``snapshot_s``, ``hf_export_s`` (hf/ and the
    trainer state, in the thread when asynchronous), ``hf_block_s`` (the part of the block the
    HF export caused: the wait and the copy, or the whole export, digest and COMPLETE when
    synchronous) and ``total_s`` (from the first barrier to COMPLETE)."""

    def __init__(
        self, engine: Any, spec: JobSpec, paths: RunDir, rank: int, asynchronous: bool
    ) -> None:
        self.engine, self.spec, self.paths, self.rank = engine, spec, paths, rank
        self.asynchronous = asynchronous
        self._pending: _Completion | None = None

    def save(self, step: int, position: MixturePosition | None) -> None:
        t_enter = time.perf_counter()
        self.wait()  # the previous export is finished (its error raised) before this save
        wait_s = time.perf_counter() - t_enter
        target = ckpt.checkpoint_dir(self.paths.checkpoints, step)
        with space_errors(self.paths, step, target, self.rank):
            job = self._write_state(step, position, target, t_enter)
            if job is None:
                return  # not rank 0: this rank's part is on disk
            if not self.asynchronous:
                job.write()
                job.held(wait_s)
                job.log(self.paths)
                return
        job.thread = threading.Thread(
            target=job.run_in_thread, args=(self.paths,), name=f"orch-ckpt-{step}"
        )
        try:
            job.thread.start()
        finally:
            job.held(wait_s)
            job.block_known.set()
        self._pending = job

    def _write_state(
        self,
        step: int,
        position: MixturePosition | None,
        target: Path,
        t_enter: float,
    ) -> _Completion | None:
        """The DeepSpeed state of every rank, then on rank 0 hf/ (synchronous) or the snapshot
        (asynchronous): what the rest of the checkpoint needs from the engine."""
        import deepspeed

        engine, rank = self.engine, self.rank
        if rank == 0 and target.exists() and not (target / ckpt.COMPLETE).exists():
            shutil.rmtree(target)  # a partial write from a failed attempt; never read as valid
        dist.barrier()
        t0 = time.perf_counter()
        engine.save_checkpoint(str(target), tag=ckpt.DEEPSPEED_TAG)
        t_ds = time.perf_counter() - t0
        # Every rank's DeepSpeed shard is on disk: from here rank 0 alone finishes the
        # checkpoint, and COMPLETE (written after this) needs no barrier of its own.
        dist.barrier()
        t_export = time.perf_counter()
        module: VLMClassifier = engine.module
        datasets = {n: get_kind(d.kind).head_info(d) for n, d in self.spec.datasets.items()}
        snapshot, t_snap, t_hf = None, 0.0, 0.0
        # Under ZeRO-3 parameters are partitioned: gather them (every rank enters) to export.
        gather = (
            deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
            if engine.zero_optimization_stage() == 3
            else contextlib.nullcontext()
        )
        with gather:
            if rank == 0:
                t = time.perf_counter()
                if self.asynchronous:
                    snapshot = snapshot_classifier(module)  # a copy: later steps leave it be
                    t_snap = time.perf_counter() - t
                else:
                    hf = target / ckpt.HF_DIR
                    save_classifier(module, hf, self.spec.model.path, datasets)
                    t_hf = time.perf_counter() - t
        if rank != 0:
            return None
        times = {"deepspeed_s": t_ds, "snapshot_s": t_snap, "hf_export_s": t_hf}
        return _Completion(
            step=step,
            target=target,
            module=module,
            source=self.spec.model.path,
            datasets=datasets,
            trainer_state={"step": step, "data_position": position.to_json() if position else None},
            snapshot=snapshot,
            t_enter=t_enter,
            t0=t0,
            t_export=t_export,
            asynchronous=self.asynchronous,
            times=times,
        )

    def wait(self) -> None:
        """Join the running export, if any; its error is raised here (a full disk as a
        CheckpointSpaceError, the partial checkpoint removed)."""
        job, self._pending = self._pending, None
        if job is None:
            return
        assert job.thread is not None
        job.thread.join()
        if job.error is None:
            return
        if disk_full(job.error, self.paths):
            with space_errors(self.paths, job.step, job.target, self.rank):
                raise job.error
        previous = ckpt.latest_resumable(self.paths.checkpoints)
        done = (job.target / ckpt.COMPLETE).exists()  # the event failed, after COMPLETE
        raise CheckpointExportError(
            f"checkpoint {job.target.name}: its background export failed "
            f"({type(job.error).__name__}: {job.error}); "
            + ("it is complete" if done else "it has no COMPLETE marker and is never used")
            + f". The latest complete checkpoint is {previous.name if previous else 'none'}"
        ) from job.error

    def poll(self) -> None:
        """Between steps: an export that has ended is joined, so that its error stops the run
        now rather than at the next save."""
        job = self._pending
        if job is not None and job.thread is not None and not job.thread.is_alive():
            self.wait()

    def abandon(self) -> None:
        """On an error path: join the running export (no thread outlives the loop; what it
        completes is a valid checkpoint), logging its own error rather than raising it over the
        one under way."""
        job, self._pending = self._pending, None
        if job is None or job.thread is None:
            return
        job.thread.join()
        if job.error is not None:
            logger.error(
                "checkpoint %s: its background export failed too: %s: %s",
                job.target.name, type(job.error).__name__, job.error,
            )  # fmt: skip

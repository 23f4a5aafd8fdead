"""The job spec: one typed, strict model per TOML section.

Precedence, written down once: ``--set key=value`` on the command line > the TOML file > the
defaults below. Relative paths are resolved against the directory ``orch`` runs from, at load
time; the resolved spec (absolute paths, overrides applied) is what the run directory keeps.

Every error names the dotted key (and the TOML line when the key is in the file), what was
expected, and, for unknown keys, the closest known key.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from orchestrator.contract.errors import SpecError
from orchestrator.contract.kinds import get_kind, known_kinds
from orchestrator.contract.metrics import get_metric
from orchestrator.contract.plugins import load_plugins

DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Section(BaseModel):
    """Base for every section: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class LoraSpec(_Section):
    """LoRA adapters on the language model (peft); the vision tower and LM weights are frozen,
    the adapters and the classification head train. Exports merge the adapters in."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names inside the language model that get adapters."""


class ModelSpec(_Section):
    """The vision-language model to fine-tune, as a local Hugging Face directory."""

    path: Path
    """Local directory with config.json, weights, tokenizer and preprocessor config."""
    num_labels: int | None = Field(default=None, ge=1)
    """Width of the shared classification head; defaults to the largest num_classes."""
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    """`auto` picks flash_attention_2 when importable, else sdpa, else eager."""
    pooling: Literal["mean", "last"] = "mean"
    """How the sequence of hidden states becomes one vector for the head."""
    min_pixels: int = Field(default=56 * 56, ge=1)
    """Images smaller than this many pixels are upscaled (aspect ratio kept)."""
    max_pixels: int = Field(default=56 * 56, ge=1)
    """Images larger than this many pixels are downscaled (aspect ratio kept)."""
    prompt: str = "What is in the image?"
    """Text that follows the image in every classification sample."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (vision tower and LM): less memory, ~30 %
    more compute."""
    compile: bool = False
    """torch.compile each vision block and decoder layer (regional compilation, compiled once
    per block type). For GPUs: on an H100 it takes the 3B step from 21 % to 40 % MFU
    (bench/gpu_mfu.py); the first step pays the compile."""
    lora: LoraSpec | None = None
    """Set ([model.lora]) to train LoRA adapters on the language model instead of all weights."""

    @model_validator(mode="after")
    def _pixels_ordered(self) -> ModelSpec:
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})"
            )
        return self


class DatasetSpec(_Section):
    """The keys every dataset of the mix has, whatever its kind. Each kind extends this with its
    own keys (``orchestrator.contract.kinds``); a key of one kind on a dataset of another kind is
    an error naming the key."""

    kind: str = "classification"
    """The dataset kind: classification (one label per image, the shared head) and vqa
    (question/answer turns, next-token loss on the answers) ship with orch; plugins add more."""
    train: Path | None = None
    """Training manifest (JSONL or Parquet), in the kind's row format. Absent: an eval-only
    dataset (a benchmark), never trained on, evaluated at every checkpoint like the others."""
    eval: Path
    """Evaluation manifest, same format."""
    eval_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the eval manifest used by partial evals during training (stratified, seeded)."""
    weight: float | None = Field(default=None, gt=0.0)
    """Mixing weight (default 1): this dataset's share of training samples is its weight / the
    sum of the trained datasets' weights. An eval-only dataset has none."""
    description: str = ""
    """Free text, shown in `orch validate` and logged with the run config."""
    image_roots: list[Path] = Field(default_factory=list)
    """Directories against which relative image paths resolve, in order, after the manifest's
    own directory (the first that holds the file wins)."""
    metrics: list[str] | None = None
    """Metrics to report (names from the metric registry); default: the kind's own."""

    @property
    def head_classes(self) -> int:
        """Classes this dataset uses in the shared classification head (0: none)."""
        return 0

    @property
    def trained(self) -> bool:
        """In the training mix (it has a train manifest); else eval-only."""
        return self.train is not None

    @property
    def mix_weight(self) -> float:
        """The mixing weight (1 unless set); 0 for an eval-only dataset."""
        if self.train is None:
            return 0.0
        return 1.0 if self.weight is None else self.weight

    def manifest(self, split: str) -> Path:
        """The manifest of ``split`` (train or eval)."""
        if split == "eval":
            return self.eval
        if self.train is None:
            raise SpecError("this dataset is eval-only (no train manifest): it has no train split")
        return self.train

    @model_validator(mode="after")
    def _eval_only(self) -> DatasetSpec:
        if self.train is None and self.weight is not None:
            raise ValueError(
                "weight: an eval-only dataset (no train manifest) is not in the training mix; "
                "remove weight, or add train"
            )
        return self


class TrainingSpec(_Section):
    """The training loop, the optimiser and the Ray Train worker group."""

    max_steps: int | None = Field(default=None, ge=1)
    """Optimiser steps to train for. Exactly one of max_steps and epochs is set."""
    epochs: float | None = Field(default=None, gt=0.0)
    """Passes over the mixed training set (converted to steps at submit)."""
    lr: float = Field(default=1e-3, gt=0.0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warm-up from 0 to lr over this many steps."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"
    """Decay after warm-up, to 0 at max_steps (constant: no decay)."""
    batch_size: int = Field(default=16, ge=1)
    """Micro-batch per worker."""
    grad_accum: int = Field(default=1, ge=1)
    """Micro-batches accumulated per optimiser step."""
    grad_clip: float = Field(default=1.0, ge=0.0)
    """Global gradient-norm clip; 0 disables."""
    seed: int = 0
    checkpoint_every: int = Field(default=100, ge=1)
    """Save a checkpoint (and evaluate it) every this many steps, and at the last step."""
    async_checkpoint: bool = True
    """Write each checkpoint's HF export (hf/, its digest, COMPLETE) in a background thread
    from a CPU copy of the weights, while training goes on: the loop waits for the DeepSpeed
    state and the copy only. False: the loop waits until COMPLETE is written. Either way a
    checkpoint exists only once COMPLETE is there; the copy takes the weights' size in host
    memory on rank 0 until it is written."""
    keep_last: int | None = Field(default=None, ge=1)
    """Retention: the last K checkpoints keep their DeepSpeed state (optimizer included, so
    training can resume from them); older ones keep only their HF weights. None: every one.
    The latest always keeps it (training resumes there)."""
    keep_weights: int | None = Field(default=None, ge=1)
    """Retention: the last M checkpoints keep their HF weights; older ones are removed whole,
    except the best one and any whose eval parts have not all ended. None: every one."""
    log_every: int = Field(default=10, ge=1)
    """Report train metrics every this many steps."""
    deepspeed_config: Path = Path("jobs/deepspeed/zero2.json")
    """DeepSpeed JSON; batch, accumulation, clipping and bf16 may be "auto" (taken from here)."""
    num_workers: int = Field(default=2, ge=1)
    """Ray Train workers (one per GPU when use_gpu)."""
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    bf16: bool = False
    max_failures: int = Field(default=1, ge=0)
    """Worker-group restarts (from the last checkpoint) before the run fails: a worker that
    dies, or a node lost with its workers, costs one."""
    placement_strategy: Literal["auto", "PACK", "SPREAD"] = "auto"
    """Where Ray Train places the workers (Ray's ScalingConfig.placement_strategy): PACK onto
    as few nodes as hold them, or SPREAD over as many nodes as there are (soft: workers share
    a node when there are fewer nodes than workers, e.g. after a node is lost). auto: SPREAD
    on an allocation of its own with several nodes (`orch submit --cluster slurm --nodes N`,
    N > 1: the nodes asked for are used), PACK elsewhere (one machine, or a shared cluster
    through --address, where the nodes left free serve others)."""
    node_wait_s: float | None = Field(default=None, gt=0.0)
    """How long a worker group waits for the cluster to hold it, at the start and after each
    restart (e.g. a node was lost and the rest cannot hold every worker). None: as Ray Train
    does, wait for ever (it retries the placement every 60 s until capacity comes back). Set:
    after node_wait_s seconds without room, training stops with that reason, the run exits
    non-zero, and `orch resume RUN` continues it from its latest complete checkpoint once the
    cluster has room again."""
    resume_from: Path | None = None
    """Start from another run's checkpoint (weights, optimizer, scheduler, step, data
    position): a checkpoint directory, or a run directory (its latest complete checkpoint)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A non-finite loss writes forensics, then stops training or skips the batch."""
    max_skipped: int = Field(default=10, ge=0)
    """With on_nonfinite = "skip": batches skipped before training stops anyway."""
    pack_max_tokens: int = Field(default=4096, ge=16)
    """VQA samples of a micro-batch are packed into rows of at most this many tokens (a longer
    sample is an error, never truncated)."""
    pack_max_images: int = Field(default=18, ge=1)
    """At most this many images per packed row."""
    batch_tokens: int | None = Field(default=None, ge=16)
    """A token budget per micro-batch and training worker for the packed samples (vqa): every
    micro-batch holds, on every worker, batch_tokens / pack_max_tokens full rows, packed from a
    buffer of the mixture's draws that spans micro-batches (pack_buffer_tokens), beside the
    other kinds' samples drawn with them. Each sample still weighs one in the loss, so the
    mixing weights keep their meaning. None: batch_size samples per worker, packed among
    themselves (the last row of each micro-batch part empty)."""
    pack_buffer_tokens: int | None = Field(default=None, ge=16)
    """With batch_tokens: the drawn samples waiting to be packed, in tokens, kept beyond the
    micro-batch's budget (default: one more micro-batch of every worker). More fills the rows
    better and draws more ahead."""
    loader_workers: int | Literal["auto"] = "auto"
    """DataLoader worker processes per training worker (0: build batches in the loop). "auto":
    one when the node has a spare core per training worker, else 0 (on a machine with no spare
    core a loader process only takes CPU from training)."""
    prefetch_batches: int = Field(default=4, ge=1)
    """Micro-batches each loader worker prepares ahead."""

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingSpec:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of training.max_steps and training.epochs")
        if self.keep_weights is not None and self.keep_weights < (self.keep_last or 0):
            raise ValueError(
                f"training.keep_weights ({self.keep_weights}) is less than training.keep_last "
                f"({self.keep_last}): a checkpoint that keeps its state keeps its weights too; "
                "raise keep_weights or lower keep_last"
            )
        if self.batch_tokens is not None:
            if self.batch_tokens % self.pack_max_tokens:
                raise ValueError(
                    f"training.batch_tokens ({self.batch_tokens}) is not a multiple of "
                    f"training.pack_max_tokens ({self.pack_max_tokens}): a micro-batch holds "
                    "whole rows; make it a multiple"
                )
            if self.epochs is not None:
                raise ValueError(
                    "training.epochs with training.batch_tokens: a step's samples vary with "
                    "their lengths, so epochs do not convert to steps before training; set "
                    "training.max_steps instead"
                )
        elif self.pack_buffer_tokens is not None:
            raise ValueError(
                "training.pack_buffer_tokens is the packing buffer of training.batch_tokens; "
                "set batch_tokens too, or remove pack_buffer_tokens"
            )
        if self.keep_weights is not None and self.keep_last is None:
            raise ValueError(
                f"training.keep_weights = {self.keep_weights} removes nothing while every "
                "checkpoint keeps its DeepSpeed state (training.keep_last unset): set "
                "training.keep_last too (1: only the latest checkpoint stays resumable)"
            )
        return self

    @property
    def retention(self) -> bool:
        """Whether any checkpoint is ever removed."""
        return self.keep_last is not None or self.keep_weights is not None

    @property
    def pack_rows(self) -> int | None:
        """Packed rows per micro-batch and worker with batch_tokens, else None."""
        return None if self.batch_tokens is None else self.batch_tokens // self.pack_max_tokens

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.num_workers

    def steps_for(self, train_sizes: dict[str, int]) -> int:
        """Optimiser steps of the run: max_steps, or epochs over the datasets' train rows."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.epochs is not None
        return max(1, math.ceil(self.epochs * sum(train_sizes.values()) / self.global_batch))

    def checkpoint_steps(self, max_steps: int) -> list[int]:
        """The steps that save a checkpoint: every checkpoint_every, and the last one."""
        steps = list(range(self.checkpoint_every, max_steps + 1, self.checkpoint_every))
        return steps if steps and steps[-1] == max_steps else [*steps, max_steps]


class SlurmEvalSpec(_Section):
    """SLURM allocations of eval parts (evaluation.backend = "slurm"), separate from training's."""

    partition: str | None = None
    mem_gb: float = Field(default=4.0, gt=0.0)
    timeout_min: int = Field(default=60, ge=1)
    additional: dict[str, str | int] = Field(default_factory=dict)
    """Extra sbatch options, e.g. {account = "proj", qos = "eval"}."""


LMMS_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LMMS_PREFIX = "lmms."
"""Part names of lmms-eval tasks: ``lmms.<task>`` (a dataset name never holds a dot)."""


class LmmsSpec(_Section):
    """lmms-eval tasks run on every checkpoint, each task one eval part ([evaluation.lmms])."""

    tasks: list[str] = Field(min_length=1)
    """lmms-eval task (or group) names: a group is one part, its subtasks each a result."""
    include_path: list[Path] = Field(default_factory=list)
    """Folders of task YAMLs (yours, or orch's tests/lmms_tasks), searched before lmms-eval's own
    tasks, which are indexed only when a task is not found there."""
    limit: int | None = Field(default=None, ge=1)
    """Samples per task for the evaluation of every checkpoint (lmms-eval's --limit); None: all."""
    final_limit: int | None = Field(default=None, ge=1)
    """Samples per task for the final full eval of the best checkpoint; None (default): all."""
    model: str = "orch"
    """"orch" (orch's own model class: the checkpoint loaded as orch loads it, dtype and device
    from the part's resources) or an lmms-eval model name (qwen2_5_vl, qwen3_vl, ...), given
    pretrained=<checkpoint> and model_args."""
    model_args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Extra model arguments (orch: max_side, max_new_tokens, attn_implementation)."""
    batch_size: int = Field(default=1, ge=1)
    python: Path = Path(".venv-lmms/bin/python")
    """The Python that has lmms-eval (``make lmms`` builds .venv-lmms with orch in it)."""
    timeout_min: float = Field(default=60.0, gt=0.0)
    """A task part running longer is killed and fails (and is retried)."""

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: list[str]) -> list[str]:
        bad = [t for t in tasks if not LMMS_TASK.match(t)]
        if bad:
            raise ValueError(f"task names {bad} must match {LMMS_TASK.pattern}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(
                f"tasks are listed twice: {sorted(t for t in set(tasks) if tasks.count(t) > 1)}"
            )
        return tasks

    @field_validator("model_args")
    @classmethod
    def _no_pretrained(cls, args: dict[str, Any]) -> dict[str, Any]:
        if "pretrained" in args:
            raise ValueError(
                "pretrained is set by orch (each checkpoint's hf/ directory); remove it"
            )
        return args


def lmms_part_name(task: str) -> str:
    return f"{LMMS_PREFIX}{task}"


def lmms_task_of(part_name: str) -> str | None:
    """The lmms-eval task of a part name, or None for a dataset's part."""
    return part_name[len(LMMS_PREFIX) :] if part_name.startswith(LMMS_PREFIX) else None


class EvaluationSpec(_Section):
    """Evaluation of checkpoints, in jobs separate from training."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, raw: Any) -> Any:
        slurm = raw.get("slurm") if isinstance(raw, dict) else None
        if isinstance(slurm, dict) and "gpus_per_task" in slurm:
            raise ValueError(
                "evaluation.slurm.gpus_per_task is now evaluation.gpus_per_part (every backend "
                "honours it); move the value there"
            )
        return raw

    during_training: bool = True
    """Evaluate every checkpoint on each dataset's eval_ratio subset."""
    final_full: bool = True
    """At the end, evaluate the best checkpoint on the full eval sets."""
    backend: str = "ray"
    """Where eval parts run: "ray" (Ray tasks), "slurm" (SLURM jobs through submitit), "local"
    (subprocesses), or a backend a plugin registers (orchestrator.eval_backends); checked
    against the registry before any compute."""
    batch_size: int = Field(default=64, ge=1)
    cpus_per_task: float = Field(default=1.0, gt=0.0)
    """Ray resources of one eval part; declared so eval runs beside training, never queued."""
    gpus_per_part: float = Field(default=0.0, ge=0.0)
    """GPUs each eval part holds (Ray num_gpus; SLURM --gpus-per-task, rounded up). A part with
    a GPU evaluates on CUDA, one without on the CPU: the device comes from what the part was
    given, so eval never lands on the GPUs training holds."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Evaluation dtype. "auto": bfloat16 on a GPU, float32 on the CPU."""
    group_parts: bool = False
    """Evaluate all of a checkpoint's parts with one model load (one Ray task, or one SLURM job;
    the local backend runs parts one by one); results stay one file per part, and a part that
    fails is retried alone."""
    max_concurrent: int = Field(default=1, ge=1)
    """Eval parts that may run at once (sizes the embedded Ray cluster)."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts per eval part before it is recorded as failed for good (training goes on)."""
    retry_backoff_s: float = Field(default=5.0, ge=0.0)
    """Wait before retry k: retry_backoff_s * 2**(k-1) seconds after the failure."""
    slurm: SlurmEvalSpec = Field(default_factory=SlurmEvalSpec)
    lmms: LmmsSpec | None = None
    """lmms-eval tasks evaluated on every checkpoint beside the datasets ([evaluation.lmms])."""

    @model_validator(mode="after")
    def _gpus_need_accounting(self) -> EvaluationSpec:
        if self.backend == "local" and self.gpus_per_part > 0:
            raise ValueError(
                "evaluation.gpus_per_part > 0 needs a backend that accounts for GPUs: the local "
                "backend runs parts as plain subprocesses and cannot keep them off training's "
                "GPUs; use backend = 'ray' (num_gpus) or 'slurm' (--gpus-per-task)"
            )
        return self


class BestSpec(_Section):
    """How the best checkpoint is chosen."""

    metric: str = "overall_accuracy"
    """overall_<metric> (sample-weighted over the datasets that report it) or
    <dataset>_<metric>, for any metric the datasets declare."""
    mode: Literal["max", "min"] | None = None
    """Defaults from the metric's declaration: max when higher is better (accuracy), else min
    (loss)."""

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        """The mode (filled in from the metric's declaration when the spec is validated)."""
        if self.mode is None:
            raise AssertionError("best.mode is resolved by JobSpec validation")
        return self.mode


class TrackingSpec(_Section):
    """Experiment tracking. Only the controller writes to it."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "orch"
    entity: str | None = None
    tags: list[str] = Field(default_factory=list)


class JobSpec(_Section):
    """A whole job: what to train, on what, how to evaluate and where to report."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Run names are <name>-<timestamp> unless --run-name is given."""
    runs_dir: Path = Path("runs")
    """Parent of run directories; must be shared by all nodes on a cluster."""
    ray_address: str | None = None
    """Ray cluster to join; none starts an embedded Ray in the controller process."""
    plugins: list[str] = Field(default_factory=list)
    """Modules that register dataset kinds or metrics, imported by every process of the run
    before the spec is read (e.g. ["mylab.kinds"]). orch's own kinds need none."""
    model: ModelSpec
    datasets: dict[str, SerializeAsAny[DatasetSpec]]
    training: TrainingSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    best: BestSpec = Field(default_factory=BestSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            plugins = raw.get("plugins") or []
            if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
                load_plugins(plugins)
        return raw

    @field_validator("datasets", mode="wrap")
    @classmethod
    def _datasets(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Each dataset validated by its kind's section (a union discriminated on ``kind``)."""
        if not isinstance(value, dict):
            return handler(value)
        if not value:
            raise ValueError("at least one [datasets.<name>] table is required")
        for name in value:
            if not DATASET_NAME.match(name):
                raise ValueError(
                    f"dataset name {name!r} must match {DATASET_NAME.pattern} "
                    "(it becomes a metric name and a file name)"
                )
        raw = {
            n: ({"kind": "classification", **d} if isinstance(d, dict) else d)
            for n, d in value.items()
        }
        kinds = known_kinds()
        for name, d in raw.items():
            if isinstance(d, dict) and d["kind"] not in kinds:
                raise ValueError(
                    f"datasets.{name}.kind: unknown kind {d['kind']!r}; known kinds: "
                    f'{", ".join(sorted(kinds))} (a plugin\'s kind needs plugins = ["module"])'
                )
        sections = tuple(k.spec for k in kinds.values())
        union = Annotated[Union[sections], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
        return TypeAdapter(dict[str, SerializeAsAny[union]]).validate_python(raw)

    @model_validator(mode="after")
    def _cross_checks(self) -> JobSpec:
        if not self.trained:
            raise ValueError(
                "datasets: none has a train manifest, so there is nothing to train on; give at "
                "least one dataset train (datasets without one are evaluated only); to evaluate "
                "an existing run's checkpoints use `orch eval RUN`"
            )
        if self.training.batch_tokens is not None and not self.token_packed:
            raise ValueError(
                "training.batch_tokens packs samples by tokens, but no trained dataset is of a "
                "kind that packs (vqa): remove batch_tokens (batch_size sets the micro-batch)"
            )
        largest = max(d.head_classes for d in self.datasets.values())
        if self.model.num_labels is not None and self.model.num_labels < largest:
            worst = max(self.datasets, key=lambda n: self.datasets[n].head_classes)
            raise ValueError(
                f"model.num_labels ({self.model.num_labels}) is smaller than "
                f"datasets.{worst}.num_classes ({largest}); raise num_labels or remove it "
                "to default to the largest num_classes"
            )
        for name, d in self.datasets.items():
            fields = get_kind(d.kind).record_fields
            for metric in d.metrics or []:
                m = get_metric(metric)
                if not m.needs <= fields:
                    raise ValueError(
                        f"datasets.{name}.metrics: {metric} needs sample fields "
                        f"{sorted(m.needs - fields)} that a {d.kind} dataset does not record "
                        f"(it records {sorted(fields)})"
                    )
        scope, metric = self.best_target()
        if self.best.mode is None:
            if scope.startswith("tasks/"):
                raise ValueError(
                    f"best.metric {self.best.metric!r} is an lmms-eval task metric, whose "
                    'direction orch does not know: set best.mode = "max" or "min"'
                )
            mode = "max" if get_metric(metric).higher_is_better else "min"
            object.__setattr__(self, "best", self.best.model_copy(update={"mode": mode}))
        return self

    @property
    def token_packed(self) -> list[str]:
        """The trained datasets whose kind packs them by tokens under training.batch_tokens (its
        ``token_lengths`` gives each row's tokens and images)."""
        return [n for n, d in self.trained.items() if hasattr(get_kind(d.kind), "token_lengths")]

    def declared_metrics(self, dataset: str) -> tuple[str, ...]:
        """The metrics a dataset reports: its own list, or its kind's defaults."""
        d = self.datasets[dataset]
        return tuple(d.metrics) if d.metrics is not None else get_kind(d.kind).default_metrics

    def all_metrics(self) -> tuple[str, ...]:
        """Every metric some dataset reports, in declaration order (the ``overall`` ones)."""
        seen: dict[str, None] = {}
        for name in self.datasets:
            seen.update(dict.fromkeys(self.declared_metrics(name)))
        return tuple(seen)

    def best_target(self) -> tuple[str, str]:
        """best.metric as (scope, metric): scope is ``overall``, a dataset name, or
        ``tasks/<task>`` for an lmms-eval task's metric (best.metric = "tasks/<task>/<metric>",
        as wandb shows it under eval/)."""
        lmms = self.evaluation.lmms
        if self.best.metric.startswith("tasks/"):
            _, _, rest = self.best.metric.partition("/")
            task, _, metric = rest.partition("/")
            if lmms is None or task not in lmms.tasks or not metric:
                raise ValueError(
                    f"best.metric {self.best.metric!r}: tasks/<task>/<metric> needs <task> among "
                    f"evaluation.lmms.tasks ({', '.join(lmms.tasks) if lmms else 'none set'}) "
                    "and a metric as lmms-eval names it (e.g. tasks/mmstar/average, "
                    "tasks/textvqa_val/exact_match, <metric>/<filter> for a filter other than none)"
                )
            return f"tasks/{task}", metric
        allowed = {f"overall_{m}": ("overall", m) for m in self.all_metrics()}
        for name in self.datasets:
            allowed |= {f"{name}_{m}": (name, m) for m in self.declared_metrics(name)}
        if self.best.metric not in allowed:
            raise ValueError(
                f"best.metric {self.best.metric!r} is not one of: {', '.join(sorted(allowed))} "
                "(overall_<metric> or <dataset>_<metric>, for the metrics the datasets report"
                f"{'; or tasks/<task>/<metric> of an lmms-eval task' if lmms else ''})"
            )
        return allowed[self.best.metric]

    @property
    def part_names(self) -> tuple[str, ...]:
        """Every eval part of a checkpoint: the datasets, then lmms.<task> per lmms-eval task."""
        lmms = self.evaluation.lmms
        return (*self.datasets, *(lmms_part_name(t) for t in (lmms.tasks if lmms else ())))

    @property
    def num_labels(self) -> int:
        if self.model.num_labels is not None:
            return self.model.num_labels
        return max(1, max(d.head_classes for d in self.datasets.values()))

    @property
    def trained(self) -> dict[str, DatasetSpec]:
        """The datasets of the training mix (those with a train manifest), in spec order."""
        return {n: d for n, d in self.datasets.items() if d.trained}

    def datasets_of_kind(self, kind: str) -> list[str]:
        return sorted(n for n, d in self.datasets.items() if d.kind == kind)

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved spec as plain TOML/JSON-able values (paths as strings, no nulls)."""
        return _drop_none(json.loads(self.model_dump_json()))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# --------------------------------------------------------------------------- loading


def load_spec(path: Path | str, overrides: list[str] | None = None) -> JobSpec:
    """Read, override, validate and resolve a job spec. Raises SpecError with every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read job spec ({e.strerror})") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from e
    for item in overrides or []:
        apply_override(raw, item)
    spec = validate_spec(raw, source=str(path), text=text)
    return resolve_paths(spec, Path.cwd())


def read_resolved_spec(path: Path) -> JobSpec:
    """A resolved spec as the run directory keeps it (spec.json), plugins loaded first."""
    raw = json.loads(path.read_text())
    load_plugins(raw.get("plugins") or [])
    return JobSpec.model_validate(raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as TOML if it can."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=1e-4")
    try:
        parsed: Any = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word such as `offline` is a string
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value, not a table")
        node = child
    node[parts[-1]] = parsed


def validate_spec(raw: dict[str, Any], source: str = "<spec>", text: str | None = None) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        lines = _toml_key_lines(text) if text else {}
        problems = [_describe(err, raw, source, lines) for err in e.errors()]
        raise SpecError(f"{source}: invalid job spec\n" + "\n".join(problems)) from None


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """Make every path in the spec absolute, relative to ``base``."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    datasets = {n: d.model_copy(update=_fixed_paths(d, fix)) for n, d in spec.datasets.items()}
    evaluation = spec.evaluation
    if evaluation.lmms is not None:
        lmms = evaluation.lmms
        # A venv's python is a symlink that must stay one (resolved, it leaves the venv).
        python = lmms.python if lmms.python.is_absolute() else base.absolute() / lmms.python
        lmms = lmms.model_copy(
            update={"include_path": [fix(p) for p in lmms.include_path], "python": python}
        )
        evaluation = evaluation.model_copy(update={"lmms": lmms})
    return spec.model_copy(
        update={
            "evaluation": evaluation,
            "runs_dir": fix(spec.runs_dir),
            "model": spec.model.model_copy(update={"path": fix(spec.model.path)}),
            "datasets": datasets,
            "training": spec.training.model_copy(
                update={
                    "deepspeed_config": fix(spec.training.deepspeed_config),
                    "resume_from": fix(spec.training.resume_from)
                    if spec.training.resume_from
                    else None,
                }
            ),
        }
    )


def _fixed_paths(section: BaseModel, fix: Any) -> dict[str, Any]:
    """Every Path-valued field of a section (a Path, a list of them, or None) made absolute."""
    out: dict[str, Any] = {}
    for key in type(section).model_fields:
        value = getattr(section, key)
        if isinstance(value, Path):
            out[key] = fix(value)
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            out[key] = [fix(v) for v in value]
    return out


def _describe(err: Any, raw: dict[str, Any], source: str, lines: dict[str, int]) -> str:
    loc = [str(p) for p in err["loc"]]
    if len(loc) >= 3 and loc[0] == "datasets":
        # The discriminated union puts the kind in the location: datasets.x.vqa.key (or
        # datasets.x.vqa for a check of the whole dataset table)
        raw_ds = (raw.get("datasets") or {}).get(loc[1])
        if isinstance(raw_ds, dict) and loc[2] == raw_ds.get("kind", "classification"):
            loc = loc[:2] + loc[3:]
    dotted = ".".join(loc) if loc else "(top level)"
    # The key's own line, else its table's (a missing key has no line of its own).
    line = next((lines[k] for k in _prefixes(loc) if k in lines), None)
    where = f"{source}:{line}: " if line is not None else ""
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1], raw)
        other = _other_kinds_key(loc, raw)
        if other:
            return f"  {where}{dotted}: unknown key for this dataset's kind; {other}"
        hint = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
        prefix = ".".join(loc[:-1])
        suggestion = f"; did you mean {prefix + '.' if prefix else ''}{hint[0]}?" if hint else ""
        choices = f" (known keys: {', '.join(sorted(known))})" if known and not hint else ""
        return f"  {where}{dotted}: unknown key{suggestion}{choices}"
    if err["type"] == "missing":
        if len(loc) == 3 and loc[0] == "datasets":
            raw_ds = (raw.get("datasets") or {}).get(loc[1])
            kind = raw_ds.get("kind", "classification") if isinstance(raw_ds, dict) else "?"
            others = sorted(k for k in known_kinds() if k != kind)
            return (
                f"  {where}{dotted}: required key is missing for a {kind} dataset (set it, or "
                f"kind = one of {others} for another kind of data)"
            )
        return f"  {where}{dotted}: required key is missing"
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"  {where}{dotted}: {msg}{shown}"


def _prefixes(loc: list[str]) -> list[str]:
    """datasets.a.num_classes, datasets.a, datasets: the dotted key, then its tables."""
    return [".".join(loc[:i]) for i in range(len(loc), 0, -1)]


def _other_kinds_key(loc: list[str], raw: dict[str, Any]) -> str:
    """For a dataset key that belongs to other kinds: which ones (else "")."""
    if len(loc) != 3 or loc[0] != "datasets":
        return ""
    raw_ds = (raw.get("datasets") or {}).get(loc[1])
    kind = raw_ds.get("kind", "classification") if isinstance(raw_ds, dict) else "?"
    owners = sorted(n for n, k in known_kinds().items() if loc[2] in k.spec.model_fields)
    if not owners:
        return ""
    return (
        f"{loc[2]} is a key of {' and '.join(owners)} datasets, and this one is "
        f"kind = {kind!r} (remove the key, or set the kind it belongs to)"
    )


def _known_keys(loc: list[str], raw: dict[str, Any]) -> list[str]:
    """Field names of the section at ``loc`` (a dotted path into JobSpec); a dataset's section
    is its kind's."""
    model: type[BaseModel] = JobSpec
    i = 0
    while i < len(loc):
        field = model.model_fields.get(loc[i])
        if field is None:
            return []
        ann = field.annotation
        if loc[i] == "datasets":
            raw_ds = (raw.get("datasets") or {}).get(loc[i + 1]) if i + 1 < len(loc) else None
            kind = raw_ds.get("kind", "classification") if isinstance(raw_ds, dict) else None
            kinds = known_kinds()
            model = kinds[kind].spec if kind in kinds else DatasetSpec
            i += 2  # skip the dataset name
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        i += 1
    return list(model.model_fields)


_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def _toml_key_lines(text: str) -> dict[str, int]:
    """Map dotted keys to their 1-based line in the TOML text (tables and plain keys)."""
    out: dict[str, int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            table = m.group(1).replace('"', "").replace(" ", "")
            out.setdefault(table, n)
        elif m := _KEY.match(line):
            key = m.group(1).strip('"')
            out.setdefault(f"{table}.{key}" if table else key, n)
    return out

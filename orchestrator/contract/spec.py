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
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.contract.errors import SpecError

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


RATINGS = ("relevance", "image_correspondence", "visual_dependency", "formatting")


class DatasetSpec(_Section):
    """One dataset of the mix: image classification (the shared head) or VQA (generative)."""

    kind: Literal["classification", "vqa"] = "classification"
    """classification: one label per image, the shared head, masked to num_classes.
    vqa: images plus user/assistant turns, next-token loss on the answers, exact match."""
    train: Path
    """Training manifest (JSONL or Parquet). classification rows: image_path, label,
    dataset_name; vqa rows: id, dataset_name, images, texts [{user, assistant, ratings?}]."""
    eval: Path
    """Evaluation manifest, same format."""
    num_classes: int | None = Field(default=None, ge=1)
    """classification: labels of this dataset are integers in [0, num_classes)."""
    eval_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the eval manifest used by partial evals during training (stratified, seeded)."""
    weight: float = Field(default=1.0, gt=0.0)
    """Mixing weight: this dataset's share of training samples is weight / sum(weights)."""
    description: str = ""
    """Free text, shown in `orch validate` and logged with the run config."""
    labels: Path | None = None
    """Optional JSON list of label names, index = label."""
    image_roots: list[Path] = Field(default_factory=list)
    """Directories against which relative image paths resolve, in order, after the manifest's
    own directory (the first that holds the file wins)."""
    min_ratings: dict[str, int] = Field(default_factory=dict)
    """vqa: drop turns whose quality rating is below these minimums (keys: relevance,
    image_correspondence, visual_dependency, formatting; 1-5). Counted and logged, never silent;
    a turn without that rating is kept."""
    max_image_side: int = Field(default=448, ge=28)
    """vqa: images are resized keeping the aspect ratio so the long side is at most this, both
    sides a multiple of the patch size times the merge size."""
    min_image_side: int = Field(default=0, ge=0)
    """vqa: smaller images are upscaled (aspect ratio kept) until the short side reaches this."""
    tile_size: int | None = Field(default=None, ge=28)
    """vqa: split each image into tiles of this side plus one global view (none: no split)."""
    max_tiles: int = Field(default=4, ge=1)
    """vqa: at most this many tiles per image (the image is scaled down to fit)."""
    max_new_tokens: int = Field(default=16, ge=1)
    """vqa: tokens generated per answer when evaluating."""

    @model_validator(mode="after")
    def _kind_fields(self) -> DatasetSpec:
        if self.kind == "classification" and self.num_classes is None:
            raise ValueError(
                "num_classes is required for a classification dataset (set num_classes, or "
                'kind = "vqa" for question/answer data)'
            )
        if self.kind == "vqa" and self.num_classes is not None:
            raise ValueError("num_classes applies to classification datasets; remove it for vqa")
        unknown = sorted(set(self.min_ratings) - set(RATINGS))
        if unknown:
            raise ValueError(f"min_ratings: unknown rating(s) {unknown}; known: {list(RATINGS)}")
        bad = {k: v for k, v in self.min_ratings.items() if not 1 <= v <= 5}
        if bad:
            raise ValueError(f"min_ratings: ratings are 1-5, got {bad}")
        return self

    @property
    def classes(self) -> int:
        """num_classes of a classification dataset (0 for vqa: no head classes)."""
        return self.num_classes or 0


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
    """Worker-group restarts (from the last checkpoint) before the run fails."""
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
        return self

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.num_workers


class SlurmEvalSpec(_Section):
    """SLURM allocations of eval parts (evaluation.backend = "slurm"), separate from training's."""

    partition: str | None = None
    mem_gb: float = Field(default=4.0, gt=0.0)
    timeout_min: int = Field(default=60, ge=1)
    gpus_per_task: int = Field(default=0, ge=0)
    additional: dict[str, str | int] = Field(default_factory=dict)
    """Extra sbatch options, e.g. {account = "proj", qos = "eval"}."""


class EvaluationSpec(_Section):
    """Evaluation of checkpoints, in jobs separate from training."""

    during_training: bool = True
    """Evaluate every checkpoint on each dataset's eval_ratio subset."""
    final_full: bool = True
    """At the end, evaluate the best checkpoint on the full eval sets."""
    backend: Literal["ray", "slurm", "local"] = "ray"
    """Where eval parts run: Ray tasks, SLURM jobs (submitit), or local subprocesses."""
    batch_size: int = Field(default=64, ge=1)
    cpus_per_task: float = Field(default=1.0, gt=0.0)
    """Ray resources of one eval part; declared so eval runs beside training, never queued."""
    max_concurrent: int = Field(default=1, ge=1)
    """Eval parts that may run at once (sizes the embedded Ray cluster)."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts per eval part before it is recorded as failed for good (training goes on)."""
    retry_backoff_s: float = Field(default=5.0, ge=0.0)
    """Wait before retry k: retry_backoff_s * 2**(k-1) seconds after the failure."""
    slurm: SlurmEvalSpec = Field(default_factory=SlurmEvalSpec)


class BestSpec(_Section):
    """How the best checkpoint is chosen."""

    metric: str = "overall_accuracy"
    """overall_accuracy, overall_loss, <dataset>_accuracy or <dataset>_loss."""
    mode: Literal["max", "min"] | None = None
    """Defaults to max for accuracy and min for loss."""

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        if self.mode is not None:
            return self.mode
        return "min" if self.metric.endswith("_loss") else "max"


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
    model: ModelSpec
    datasets: dict[str, DatasetSpec]
    training: TrainingSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    best: BestSpec = Field(default_factory=BestSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, v: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        if not v:
            raise ValueError("at least one [datasets.<name>] table is required")
        for name in v:
            if not DATASET_NAME.match(name):
                raise ValueError(
                    f"dataset name {name!r} must match {DATASET_NAME.pattern} "
                    "(it becomes a metric name and a file name)"
                )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> JobSpec:
        largest = max(d.classes for d in self.datasets.values())
        if self.model.num_labels is not None and self.model.num_labels < largest:
            worst = max(self.datasets, key=lambda n: self.datasets[n].classes)
            raise ValueError(
                f"model.num_labels ({self.model.num_labels}) is smaller than "
                f"datasets.{worst}.num_classes ({largest}); raise num_labels or remove it "
                "to default to the largest num_classes"
            )
        metric = self.best.metric
        allowed = {"overall_accuracy", "overall_loss"} | {
            f"{n}_{m}" for n in self.datasets for m in ("accuracy", "loss")
        }
        if metric not in allowed:
            raise ValueError(f"best.metric {metric!r} is not one of: {', '.join(sorted(allowed))}")
        return self

    @property
    def num_labels(self) -> int:
        if self.model.num_labels is not None:
            return self.model.num_labels
        return max(1, max(d.classes for d in self.datasets.values()))

    @property
    def vqa_datasets(self) -> list[str]:
        return sorted(n for n, d in self.datasets.items() if d.kind == "vqa")

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

    datasets = {
        n: d.model_copy(
            update={
                "train": fix(d.train),
                "eval": fix(d.eval),
                "labels": fix(d.labels) if d.labels else None,
                "image_roots": [fix(r) for r in d.image_roots],
            }
        )
        for n, d in spec.datasets.items()
    }
    return spec.model_copy(
        update={
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


def _describe(err: Any, raw: dict[str, Any], source: str, lines: dict[str, int]) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc) if loc else "(top level)"
    where = f"{source}:{lines[dotted]}: " if dotted in lines else ""
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
        prefix = ".".join(loc[:-1])
        suggestion = f"; did you mean {prefix + '.' if prefix else ''}{hint[0]}?" if hint else ""
        choices = f" (known keys: {', '.join(sorted(known))})" if known and not hint else ""
        return f"  {where}{dotted}: unknown key{suggestion}{choices}"
    if err["type"] == "missing":
        return f"  {where}{dotted}: required key is missing"
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"  {where}{dotted}: {msg}{shown}"


def _known_keys(loc: list[str]) -> list[str]:
    """Field names of the section at ``loc`` (a dotted path into JobSpec)."""
    model: type[BaseModel] = JobSpec
    i = 0
    while i < len(loc):
        field = model.model_fields.get(loc[i])
        if field is None:
            return []
        ann = field.annotation
        if loc[i] == "datasets":
            model, i = DatasetSpec, i + 2  # skip the dataset name
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

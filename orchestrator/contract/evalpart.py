"""The description of one eval part: which checkpoint, which dataset, where the result goes.

It carries the dataset's and the model's own spec sections (as JSON) rather than copies of
their fields, so a kind's new key reaches its evaluation with no change here. Light enough for
the controller to import (no torch); JSON-serialisable so any backend can carry it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.contract.spec import DatasetSpec, JobSpec, ModelSpec


@dataclass(frozen=True)
class EvalPart:
    step: int  # the checkpoint's step
    dataset: str
    kind: str
    checkpoint: str  # the checkpoint's hf/ directory
    dataset_spec: dict[str, Any]  # the dataset's section of the resolved spec
    model_spec: dict[str, Any]  # the model section
    eval_ratio: float  # 1.0 for a full eval
    partial: bool
    seed: int
    batch_size: int
    out: str  # the result file
    metrics: list[str]  # the metrics the dataset declares
    backend: str = "local"
    attempt: int = 1
    plugins: list[str] = field(default_factory=list)
    checkpoint_digest: str | None = None  # recorded when the checkpoint was saved
    gpus: float = 0.0  # GPUs the backend gives the part (evaluation.gpus_per_part): CUDA or CPU
    dtype: str = "auto"  # evaluation.dtype
    index_root: str | None = None  # where the eval rows are indexed (None: read the manifest)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> EvalPart:
        return cls(**value)

    def dataset_section(self) -> DatasetSpec:
        """The dataset's spec section, validated by its kind (plugins loaded first)."""
        from orchestrator.contract.kinds import get_kind
        from orchestrator.contract.plugins import load_plugins

        load_plugins(self.plugins)
        return get_kind(self.kind).spec.model_validate(self.dataset_spec)

    def model_section(self) -> ModelSpec:
        from orchestrator.contract.spec import ModelSpec

        return ModelSpec.model_validate(self.model_spec)


def eval_part(
    spec: JobSpec,
    dataset: str,
    *,
    step: int,
    checkpoint: str,
    full: bool,
    out: str,
    backend: str,
    attempt: int = 1,
    checkpoint_digest: str | None = None,
) -> EvalPart:
    """The eval part of one (checkpoint, dataset): eval_ratio of the set, or all of it; or of
    one lmms-eval task (part name ``lmms.<task>``): ``limit`` samples, or ``final_limit``."""
    from orchestrator.contract.layout import index_root
    from orchestrator.contract.records import LMMS_KIND
    from orchestrator.contract.spec import lmms_task_of

    shared: dict[str, Any] = {
        "step": step,
        "dataset": dataset,
        "checkpoint": checkpoint,
        "model_spec": spec.model.model_dump(mode="json"),
        "partial": not full,
        "seed": spec.training.seed,
        "out": out,
        "backend": backend,
        "attempt": attempt,
        "plugins": list(spec.plugins),
        "checkpoint_digest": checkpoint_digest,
        "gpus": spec.evaluation.gpus_per_part,
        "dtype": spec.evaluation.dtype,
    }
    task = lmms_task_of(dataset)
    if task is not None:
        lmms = spec.evaluation.lmms
        if lmms is None or task not in lmms.tasks:
            raise ValueError(f"{dataset}: no such task in evaluation.lmms.tasks")
        section = lmms.model_dump(mode="json", exclude={"tasks"})
        limit = lmms.final_limit if full else lmms.limit
        return EvalPart(
            kind=LMMS_KIND,
            dataset_spec={**section, "task": task, "limit": limit},
            eval_ratio=1.0,
            batch_size=lmms.batch_size,
            metrics=[],
            **shared,
        )
    ds = spec.datasets[dataset]
    return EvalPart(
        kind=ds.kind,
        dataset_spec=ds.model_dump(mode="json"),
        eval_ratio=1.0 if full else ds.eval_ratio,
        batch_size=spec.evaluation.batch_size,
        metrics=list(spec.declared_metrics(dataset)),
        index_root=str(index_root(spec.runs_dir)),
        **shared,
    )

"""Image classification: one label per image, the shared head masked to the dataset's classes.

Rows: JSONL/Parquet ``{"image_path", "label", "dataset_name"[, "id"]}`` (workers/data/manifest).
Per-sample eval records: ``id, label, prediction, correct, top5, loss``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.kinds import EvalOutput, Finding, Split
from orchestrator.contract.spec import DatasetSpec, JobSpec, ModelSpec
from workers.kinds.streamed import StreamedKind

if TYPE_CHECKING:
    import torch

    from workers.data.encode import ClassificationBatch, ClassificationEncoder
    from workers.data.manifest import Sample


class ClassificationSpec(DatasetSpec):
    """An image classification dataset of the mix (the shared head, masked to num_classes)."""

    kind: Literal["classification"] = "classification"
    num_classes: int = Field(ge=1)
    """Labels of this dataset are integers in [0, num_classes)."""
    labels: Path | None = None
    """Optional JSON list of label names, index = label."""

    @property
    def head_classes(self) -> int:
        return self.num_classes

    @model_validator(mode="after")
    def _needs_train(self) -> ClassificationSpec:
        if self.train is None:
            raise ValueError(
                "train: a classification dataset is evaluated through the shared head, which only "
                "its own training teaches its classes; give it train (eval-only datasets are vqa "
                "or mcq)"
            )
        return self


@dataclass
class ClassificationCollator:
    """(dataset, Sample) picks -> a ClassificationBatch, with the model directory's processor."""

    spec: JobSpec
    _encoder: ClassificationEncoder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_encoder": None}  # rebuilt in the process that uses it

    @property
    def encoder(self) -> ClassificationEncoder:
        if self._encoder is None:
            self._encoder = make_encoder(self.spec.model.path, self.spec.model)
        return self._encoder

    def __call__(self, picks: Sequence[tuple[str, Any]]) -> ClassificationBatch:
        classes = {n: d.head_classes for n, d in self.spec.datasets.items()}
        return self.encoder.encode([s for _, s in picks], classes)


def make_encoder(model_dir: Path, m: ModelSpec) -> ClassificationEncoder:
    """The image processor and tokenizer of ``model_dir`` with the model section's prompt and
    pixel bounds."""
    from workers.data.encode import ClassificationEncoder

    return ClassificationEncoder(Path(model_dir), m.prompt, m.min_pixels, m.max_pixels)


class ClassificationKind(StreamedKind["Sample"]):
    name = "classification"
    spec: type[DatasetSpec] = ClassificationSpec
    default_metrics: tuple[str, ...] = ("accuracy", "loss", "top5_accuracy")
    record_fields = frozenset({"id", "label", "prediction", "correct", "top5", "loss"})

    def stream(
        self,
        name: str,
        ds: DatasetSpec,
        split: Split,
        configured: Sequence[str],
        problems: list[str],
    ) -> Iterator[Sample]:
        from workers.data.manifest import iter_manifest

        assert isinstance(ds, ClassificationSpec)
        path = ds.manifest(split)
        return iter_manifest(path, name, ds.num_classes, problems, configured=configured)

    def images(self, row: Sample) -> list[tuple[int, Path]]:
        return [(row.line, row.image_path)]

    def eval_subset(self, rows: Sequence[Sample], ratio: float, seed: int) -> list[Sample]:
        """Seeded subset, the same share of every class (at least one sample each)."""
        from workers.data.subset import stratified

        return stratified(rows, ratio, seed, key=lambda s: s.label)

    def collator(self, spec: JobSpec) -> ClassificationCollator:
        return ClassificationCollator(spec)

    def forward(
        self, engine: Any, batch: ClassificationBatch, device: Any, dtype: Any, attn: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from workers.models.classifier import classification_loss

        logits = engine(**batch.model_inputs(device, dtype))
        labels = batch.labels.to(device)
        loss, masked = classification_loss(logits, labels, batch.num_classes.to(device), batch.ids)
        return loss, masked.argmax(-1) == labels

    def evaluate(
        self, part: EvalPart, model: Any, rows: Sequence[Sample], device: Any
    ) -> EvalOutput:
        from workers.evaluate import param_dtype
        from workers.metrics import per_class_accuracy
        from workers.models.classifier import classification_loss

        ds = part.dataset_section()
        assert isinstance(ds, ClassificationSpec)
        encoder = make_encoder(Path(part.checkpoint), part.model_section())
        records: list[dict[str, Any]] = []
        for start in range(0, len(rows), part.batch_size):
            chunk = rows[start : start + part.batch_size]
            batch = encoder.encode(chunk, {part.dataset: ds.num_classes})
            logits = model(**batch.model_inputs(device, param_dtype(model)))
            labels = batch.labels.to(device)
            loss, masked = classification_loss(logits, labels, batch.num_classes.to(device))
            k = min(5, ds.num_classes)
            top = masked.topk(k, dim=-1).indices
            for i, s in enumerate(chunk):
                pred = int(top[i, 0])
                records.append(
                    {
                        "id": s.id,
                        "label": s.label,
                        "prediction": pred,
                        "correct": float(pred == s.label),
                        "top5": float(bool((top[i] == labels[i]).any())),
                        "loss": float(loss[i]),
                    }
                )
        labels_ = [int(r["label"]) for r in records]
        preds = [int(r["prediction"]) for r in records]
        per_class = {str(c): v for c, v in per_class_accuracy(labels_, preds).items()}
        return EvalOutput(records, breakdowns={"per_class_accuracy": per_class})

    def doctor(self, spec: JobSpec, name: str, model: Any | None) -> list[Finding]:
        from workers.data.index import open_index

        ds = spec.datasets[name]
        assert isinstance(ds, ClassificationSpec)
        rows = open_index(spec, name, "train")  # streamed: any size of manifest
        if model is None:
            return _label_coverage(name, ds, rows)
        return [_masking(spec, name, ds, rows, model)]

    def head_info(self, ds: DatasetSpec) -> dict[str, Any]:
        import json

        assert isinstance(ds, ClassificationSpec)
        names = json.loads(ds.labels.read_text()) if ds.labels and ds.labels.is_file() else None
        return {"kind": self.name, "num_classes": ds.num_classes, "labels": names}


def _label_coverage(name: str, ds: ClassificationSpec, rows: Sequence[Sample]) -> list[Finding]:
    absent = sorted(set(range(ds.num_classes)) - {s.label for s in rows})
    if not absent:
        return []
    shown = ", ".join(map(str, absent[:10])) + (" ..." if len(absent) > 10 else "")
    return [
        Finding(
            "warning",
            "labels",
            f"{name}: {len(absent)} of {ds.num_classes} classes never appear in train ({shown})",
            "check num_classes or the manifest",
        )
    ]


def _masking(
    spec: JobSpec, name: str, ds: ClassificationSpec, rows: Sequence[Sample], model: Any
) -> Finding:
    """One real batch through the model: masked losses finite, predictions in range."""
    import math

    import torch

    from workers.models.classifier import classification_loss

    classes = {n: d.head_classes for n, d in spec.datasets.items()}
    batch = make_encoder(spec.model.path, spec.model).encode(list(rows[:4]), classes)
    with torch.no_grad():
        logits = model(**batch.model_inputs(torch.device("cpu"), torch.float32))
    loss, masked = classification_loss(logits, batch.labels, batch.num_classes, batch.ids)
    worst = float(loss.max())
    if not math.isfinite(worst) or (masked.argmax(-1) >= batch.num_classes).any():
        return Finding(
            "error",
            "masking",
            f"{name}: non-finite loss or prediction outside the dataset's classes on a real batch",
            "run with -v and inspect the model and data",
        )
    return Finding(
        "ok",
        "masking",
        f"{name}: finite losses (max {worst:.3f}) on a real batch, predictions within "
        f"{ds.num_classes} classes",
    )


KIND = ClassificationKind()

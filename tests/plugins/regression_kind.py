"""An extra dataset kind, defined entirely outside orchestrator/ and workers/: image regression
(one float target per image, the shared head's first unit as the prediction, squared error as
the loss), with its own metrics (mse, mae). A job uses it with ``plugins =
["tests.plugins.regression_kind"]`` and ``kind = "regression"``.

Rows: JSONL ``{"image_path", "target", "dataset_name"[, "id"]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from orchestrator.contract.errors import DataError
from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.kinds import EvalOutput, Finding, Split, register_kind
from orchestrator.contract.metrics import Metric, register_metric
from orchestrator.contract.spec import DatasetSpec, JobSpec, ModelSpec


class RegressionSpec(DatasetSpec):
    kind: Literal["regression"] = "regression"
    tolerance: float = Field(default=0.1, gt=0.0)
    """A prediction within this of the target counts as correct (the `accuracy` metric)."""

    @property
    def head_classes(self) -> int:
        return 1  # the prediction is the shared head's first unit


@dataclass(frozen=True)
class Row:
    id: str
    image_path: Path
    target: float
    dataset: str
    line: int


@dataclass
class RegressionBatch:
    images: Any  # a ClassificationBatch: the same image encoding as classification
    targets: Any  # float tensor [B]

    @property
    def ids(self) -> list[str]:
        return list(self.images.ids)

    @property
    def datasets(self) -> list[str]:
        return list(self.images.datasets)


def _encoder(model_dir: Path, m: ModelSpec) -> Any:
    from workers.data.encode import ClassificationEncoder

    return ClassificationEncoder(model_dir, m.prompt, m.min_pixels, m.max_pixels)


def _encode(encoder: Any, rows: Sequence[Row]) -> RegressionBatch:
    import torch

    from workers.data.manifest import Sample

    samples = [Sample(r.id, r.image_path, 0, r.dataset, r.line) for r in rows]
    images = encoder.encode(samples, {r.dataset: 1 for r in rows})
    return RegressionBatch(images, torch.tensor([r.target for r in rows], dtype=torch.float32))


@dataclass
class Collator:
    spec: JobSpec
    _encoder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_encoder": None}

    def __call__(self, picks: Sequence[tuple[str, Any]]) -> RegressionBatch:
        if self._encoder is None:
            self._encoder = _encoder(self.spec.model.path, self.spec.model)
        return _encode(self._encoder, [row for _, row in picks])


def _predict(model: Any, batch: RegressionBatch, device: Any, dtype: Any) -> Any:
    return model(**batch.images.model_inputs(device, dtype))[:, 0].float()


class RegressionKind:
    name = "regression"
    spec: type[DatasetSpec] = RegressionSpec
    default_metrics: tuple[str, ...] = ("mse", "mae", "accuracy")
    record_fields = frozenset({"id", "prediction", "target", "loss", "correct"})

    def read(
        self, name: str, ds: DatasetSpec, split: Split, configured: Sequence[str] = ()
    ) -> list[Row]:
        path = ds.manifest(split)
        rows, problems = [], []
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            row = json.loads(text)
            target = row.get("target")
            if isinstance(target, bool) or not isinstance(target, int | float):
                problems.append(f"{path}:{line}: target must be a number, got {target!r}")
                continue
            image = Path(row["image_path"])
            rows.append(Row(str(row.get("id", f"{name}:{line}")), image, float(target), name, line))
        if problems:
            raise DataError("\n".join(problems))
        return rows

    def images(self, row: Row) -> list[tuple[int, Path]]:
        return [(row.line, row.image_path)]

    def eval_subset(self, rows: Sequence[Row], ratio: float, seed: int) -> list[Row]:
        from workers.data.subset import stratified

        return stratified(rows, ratio, seed, key=lambda r: 0)

    def collator(self, spec: JobSpec) -> Collator:
        return Collator(spec)

    def forward(
        self, engine: Any, batch: RegressionBatch, device: Any, dtype: Any, attn: str
    ) -> tuple[Any, Any]:
        pred = _predict(engine, batch, device, dtype)
        target = batch.targets.to(device)
        return (pred - target) ** 2, (pred - target).abs() < 0.1

    def evaluate(self, part: EvalPart, model: Any, rows: Sequence[Row], device: Any) -> EvalOutput:
        from workers.evaluate import dtype_for

        ds = part.dataset_section()
        assert isinstance(ds, RegressionSpec)
        encoder = _encoder(Path(part.checkpoint), part.model_section())
        records: list[dict[str, Any]] = []
        for start in range(0, len(rows), part.batch_size):
            chunk = rows[start : start + part.batch_size]
            preds = _predict(model, _encode(encoder, chunk), device, dtype_for(device)).tolist()
            for r, p in zip(chunk, preds, strict=True):
                err = p - r.target
                records.append(
                    {
                        "id": r.id,
                        "prediction": p,
                        "target": r.target,
                        "loss": err**2,
                        "correct": float(abs(err) < ds.tolerance),
                    }
                )
        return EvalOutput(records, examples=records[:5])

    def doctor(self, spec: JobSpec, name: str, model: Any | None) -> list[Finding]:
        return [Finding("ok", "regression", f"{name}: regression targets read")]

    def head_info(self, ds: DatasetSpec) -> dict[str, Any]:
        return {"kind": self.name, "num_classes": 1, "labels": None}


register_kind(RegressionKind())
register_metric(
    Metric(
        "mse",
        lambda r: (float(r["prediction"]) - float(r["target"])) ** 2,
        higher_is_better=False,
        needs=frozenset({"prediction", "target"}),
        description="mean squared error",
    )
)
register_metric(
    Metric(
        "mae",
        lambda r: abs(float(r["prediction"]) - float(r["target"])),
        higher_is_better=False,
        needs=frozenset({"prediction", "target"}),
        description="mean absolute error",
    )
)

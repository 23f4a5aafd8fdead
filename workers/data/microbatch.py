"""One micro-batch of a mixed run: classification samples and packed VQA samples, built from
the (dataset, index) picks of the mixture sampler.

Building is pure CPU work (decode, resize, tokenise, pack) with no model, so it runs in DataLoader
worker processes; ``Batcher`` holds everything a worker needs and pickles cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.contract.spec import JobSpec
from workers.data.encode import ClassificationBatch, ClassificationEncoder
from workers.data.manifest import Sample, read_manifest
from workers.data.vqa import (
    ImageConfig,
    PackedBatch,
    VQAEncoder,
    VQASample,
    first_fit_rows,
    pack,
    read_vqa_manifest,
)


@dataclass
class StepBatch:
    """The samples of one micro-batch on one rank, in pick order: ``ids``/``datasets`` cover the
    classification samples first, then the VQA samples (the order of the loss vector)."""

    cls: ClassificationBatch | None
    vqa: PackedBatch | None
    data_position: dict[str, Any] | None = None  # the sampler's position after this batch
    # A part with no sample on this rank is filled with one placeholder sample whose loss is
    # multiplied by zero: every rank then runs the same graph, so ZeRO's gradient buckets are
    # filled in the same order everywhere (a rank without, say, a classification sample would
    # otherwise reduce its gradients against another parameter's).
    cls_placeholder: bool = False
    vqa_placeholder: bool = False

    @property
    def ids(self) -> list[str]:
        return [i for part in self._real() for i in part.ids]

    @property
    def datasets(self) -> list[str]:
        return [d for part in self._real() for d in part.datasets]

    @property
    def labels(self) -> torch.Tensor:
        """Class labels; -1 for VQA samples (their targets are answer tokens)."""
        cls = self.cls.labels if self.cls and not self.cls_placeholder else torch.zeros(0)
        n_vqa = self.vqa.n_samples if self.vqa and not self.vqa_placeholder else 0
        return torch.cat([cls.long(), torch.full((n_vqa,), -1, dtype=torch.long)])

    def _real(self) -> list[ClassificationBatch | PackedBatch]:
        parts: list[ClassificationBatch | PackedBatch] = []
        if self.cls is not None and not self.cls_placeholder:
            parts.append(self.cls)
        if self.vqa is not None and not self.vqa_placeholder:
            parts.append(self.vqa)
        return parts

    def __len__(self) -> int:
        return len(self.ids)


def load_train_data(spec: JobSpec) -> dict[str, Sequence[Sample] | list[VQASample]]:
    data: dict[str, Sequence[Sample] | list[VQASample]] = {}
    for name, ds in spec.datasets.items():
        if ds.kind == "vqa":
            data[name] = read_vqa_manifest(ds.train, name, ds.image_roots, ds.min_ratings)[0]
        else:
            data[name] = read_manifest(ds.train, name, ds.classes)
    return data


class Batcher:
    """Turns picks into a StepBatch. Encoders are created lazily, in the process that uses them."""

    def __init__(self, spec: JobSpec, data: dict[str, Sequence[Sample] | list[VQASample]]) -> None:
        self.spec = spec
        self.data = data
        self.kinds = {n: d.kind for n, d in spec.datasets.items()}
        self.num_classes = {n: d.classes for n, d in spec.datasets.items()}
        self.image_cfg = {
            n: ImageConfig(d.max_image_side, d.min_image_side, d.tile_size, d.max_tiles)
            for n, d in spec.datasets.items()
        }
        self._cls: ClassificationEncoder | None = None
        self._vqa: VQAEncoder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_cls": None, "_vqa": None}

    @property
    def cls_encoder(self) -> ClassificationEncoder:
        if self._cls is None:
            m = self.spec.model
            self._cls = ClassificationEncoder(m.path, m.prompt, m.min_pixels, m.max_pixels)
        return self._cls

    @property
    def vqa_encoder(self) -> VQAEncoder:
        if self._vqa is None:
            self._vqa = VQAEncoder(Path(self.spec.model.path))
        return self._vqa

    def build(self, picks: Sequence[tuple[str, int]]) -> StepBatch:
        cls = [self.data[n][i] for n, i in picks if self.kinds[n] == "classification"]
        vqa = [(n, self.data[n][i]) for n, i in picks if self.kinds[n] == "vqa"]
        kinds = set(self.kinds.values())
        cls_placeholder = not cls and "classification" in kinds
        vqa_placeholder = not vqa and "vqa" in kinds
        if cls_placeholder:
            first = min(n for n, k in self.kinds.items() if k == "classification")
            cls = [self.data[first][0]]
        if vqa_placeholder:
            first = min(n for n, k in self.kinds.items() if k == "vqa")
            vqa = [(first, self.data[first][0])]
        cls_batch = (
            self.cls_encoder.encode(cls, self.num_classes)  # type: ignore[arg-type]
            if cls
            else None
        )
        vqa_batch = None
        if vqa:
            enc = self.vqa_encoder
            encoded = [enc.encode(s, self.image_cfg[n]) for n, s in vqa]  # type: ignore[arg-type]
            tr = self.spec.training
            rows = first_fit_rows(
                [e.n_tokens for e in encoded],
                [e.n_images for e in encoded],
                tr.pack_max_tokens,
                tr.pack_max_images,
            )
            vqa_batch = pack(encoded, rows, enc.image_token_id, enc.merge, enc.pad_id)
        return StepBatch(
            cls_batch,
            vqa_batch,
            cls_placeholder=cls_placeholder,
            vqa_placeholder=vqa_placeholder,
        )

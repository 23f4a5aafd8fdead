"""One micro-batch of a mixed run: each dataset kind's share, built from the (dataset, index)
picks of the mixture sampler by that kind's collator.

Building is pure CPU work (decode, resize, tokenise, pack) with no model, so it runs in DataLoader
worker processes; ``Batcher`` holds everything a worker needs and pickles cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from orchestrator.contract.kinds import Collator, KindBatch, get_kind
from orchestrator.contract.spec import JobSpec

if TYPE_CHECKING:
    from workers.data.loader import Layout


@dataclass
class KindPart:
    """One kind's share of a micro-batch. A kind with no sample on this rank gets one
    placeholder sample whose loss is multiplied by zero: every rank then runs the same graph, so
    ZeRO's gradient buckets are filled in the same order everywhere (a rank without, say, a
    classification sample would otherwise reduce its gradients against another parameter's)."""

    kind: str
    batch: Any
    placeholder: bool = False


@dataclass
class StepBatch:
    """The samples of one micro-batch on one rank: ``parts`` in the spec's kind order, and
    ``ids``/``datasets`` over the real samples in that order (the order of the loss vector)."""

    parts: list[KindPart] = field(default_factory=list)
    data_position: dict[str, Any] | None = None  # the sampler's position after this batch
    global_samples: int | None = None
    """Samples of this micro-batch over every rank, when it varies (packing by tokens); the
    loss is then their sum over this count's share of a rank, so every sample weighs the same."""

    def part(self, kind: str) -> Any | None:
        """The batch of ``kind`` (None when the micro-batch has none, or only a placeholder)."""
        return next((p.batch for p in self.parts if p.kind == kind and not p.placeholder), None)

    @property
    def ids(self) -> list[str]:
        return [i for p in self._real() for i in p.ids]

    @property
    def datasets(self) -> list[str]:
        return [d for p in self._real() for d in p.datasets]

    @property
    def labels(self) -> torch.Tensor:
        """Class labels where a kind has them (classification); -1 for the other samples."""
        out = []
        for p in self._real():
            labels = getattr(p, "labels", None)
            if isinstance(labels, torch.Tensor) and labels.dtype == torch.long:
                out.append(labels.long())
            else:
                out.append(torch.full((len(p.ids),), -1, dtype=torch.long))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def _real(self) -> list[KindBatch]:
        return [p.batch for p in self.parts if not p.placeholder]

    def __len__(self) -> int:
        return len(self.ids)


def load_train_data(spec: JobSpec) -> dict[str, Sequence[Any]]:
    """Every trained dataset's rows (eval-only ones have none): its memory-mapped index
    (workers/data/index.py), built by the pre-flight, or now if it is not there."""
    from workers.data.index import open_index

    return {name: open_index(spec, name, "train") for name in spec.trained}


class Batcher:
    """Turns picks into a StepBatch. Collators are created lazily, in the process that uses
    them."""

    def __init__(self, spec: JobSpec, data: dict[str, Sequence[Any]]) -> None:
        self.spec = spec
        self.data = data
        self.kinds = {n: d.kind for n, d in spec.datasets.items() if n in data}
        self.order = sorted(set(self.kinds.values()))
        self._collators: dict[str, Collator] = {}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_collators": {}}

    def collator(self, kind: str) -> Collator:
        if kind not in self._collators:
            self._collators[kind] = get_kind(kind).collator(self.spec)
        return self._collators[kind]

    def build(self, picks: Sequence[tuple[str, int]], layout: Layout | None = None) -> StepBatch:
        """The micro-batch of ``picks``; with a ``layout`` (packing by tokens) the packed kind's
        rows are the plan's, not packed again here."""
        parts: list[KindPart] = []
        for kind in self.order:
            positions = [k for k, (n, _) in enumerate(picks) if self.kinds[n] == kind]
            mine = [(picks[k][0], self.data[picks[k][0]][picks[k][1]]) for k in positions]
            placeholder = not mine
            if placeholder:
                first = min(n for n, k in self.kinds.items() if k == kind)
                mine = [(first, self.data[first][0])]
            rows: list[list[int]] = []
            if layout is not None and not placeholder:
                where = {k: j for j, k in enumerate(positions)}
                rows = [[where[k] for k in row] for row in layout.rows if row[0] in where]
            collate = self.collator(kind)
            batch = collate(mine, rows=rows) if rows else collate(mine)  # type: ignore[call-arg]
            parts.append(KindPart(kind, batch, placeholder))
        return StepBatch(parts, global_samples=layout.global_samples if layout else None)

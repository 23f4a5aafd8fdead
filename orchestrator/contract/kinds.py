"""Dataset kinds as plugins: the protocol a kind implements and the registry that maps ``kind``
to it.

A kind owns everything about one sort of data: its section of the job spec (a ``DatasetSpec``
subclass; the spec's ``datasets`` table is a union discriminated on ``kind``), reading and
validating rows, the eval subset, collation into micro-batches, the training loss, evaluation
into per-sample records, its ``orch doctor`` checks and its default metrics. Both planes reach a
kind only through this registry; a kind module imports nothing heavy at module level (torch and
transformers are imported inside the methods that need them), so the control plane can load the
spec without the data plane's dependencies.

Kinds are registered by the plugin modules (``orchestrator.contract.plugins``): orch's own
(``workers.plugins``), any named in the job's ``plugins = [...]``, and entry points in the
``orch.plugins`` group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from orchestrator.contract.errors import SpecError

if TYPE_CHECKING:
    from orchestrator.contract.evalpart import EvalPart
    from orchestrator.contract.spec import DatasetSpec, JobSpec

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class Finding:
    """One `orch doctor` finding, with its fix."""

    level: Literal["error", "warning", "ok"]
    check: str
    message: str
    fix: str = ""


@dataclass
class EvalOutput:
    """What a kind's evaluation of one part returns: one record per evaluated sample (the
    metrics read them), optional breakdowns (per class, per answer ...) and a few examples."""

    records: list[dict[str, Any]]
    breakdowns: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)


class KindBatch(Protocol):
    """One kind's share of a micro-batch."""

    @property
    def ids(self) -> list[str]: ...

    @property
    def datasets(self) -> list[str]: ...


class Collator(Protocol):
    """Builds a kind's share of a micro-batch from (dataset, row) picks. Created lazily in the
    process that uses it (a DataLoader worker), so it may hold tokenizers and processors."""

    def __call__(self, picks: Sequence[tuple[str, Any]]) -> KindBatch: ...


class DatasetKind(Protocol):
    """The plugin interface of a dataset kind (see the module docstring)."""

    name: str
    spec: type[DatasetSpec]
    default_metrics: tuple[str, ...]
    record_fields: frozenset[str]
    """Fields of this kind's per-sample eval records: the metrics a dataset may list."""

    def read(self, name: str, ds: DatasetSpec, split: Split, configured: Sequence[str]) -> Any:
        """Every row of a split, checked; a bad row raises DataError with its file and line."""
        ...

    def images(self, row: Any) -> list[tuple[int, Path]]:
        """(manifest line, image path) of each image a row uses (for `orch validate`)."""
        ...

    def eval_subset(self, rows: Sequence[Any], ratio: float, seed: int) -> list[Any]:
        """The seeded subset of ``ratio`` of the eval rows used by partial evals."""
        ...

    def collator(self, spec: JobSpec) -> Collator: ...

    def forward(self, engine: Any, batch: Any, device: Any, dtype: Any, attn: str) -> Any:
        """(per-sample losses, per-sample correct) of a training micro-batch share."""
        ...

    def evaluate(
        self, part: EvalPart, model: Any, rows: Sequence[Any], device: Any
    ) -> EvalOutput: ...

    def doctor(self, spec: JobSpec, name: str, model: Any | None) -> list[Finding]:
        """This kind's `orch doctor` checks of one dataset: of its data when ``model`` is None,
        else of a real batch through ``model``."""
        ...

    def head_info(self, ds: DatasetSpec) -> dict[str, Any]:
        """What the exported checkpoint records about the dataset (orch_classifier.json)."""
        ...

    # Optional: ``check_rows(spec, name, manifest, rows) -> list[str]``, further problems of a
    # split's rows found before any compute (each "file:line: ..."), run by `orch validate` and
    # the pre-flight of `orch submit` (the VQA kind: a sample too long for a pack).


_KINDS: dict[str, DatasetKind] = {}


def register_kind(kind: DatasetKind) -> DatasetKind:
    """Register a dataset kind under ``kind.name`` (idempotent for the same object)."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind and type(known) is not type(kind):
        raise ValueError(f"dataset kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> DatasetKind:
    from orchestrator.contract.plugins import load_plugins

    load_plugins()
    try:
        return _KINDS[name]
    except KeyError:
        raise SpecError(
            f"unknown dataset kind {name!r}; known kinds: {', '.join(sorted(_KINDS)) or 'none'} "
            "(a kind from a plugin needs its module in the job's plugins = [...])"
        ) from None


def known_kinds() -> dict[str, DatasetKind]:
    from orchestrator.contract.plugins import load_plugins

    load_plugins()
    return dict(_KINDS)

"""Classification manifests: JSONL lines ``{"image_path", "label", "dataset_name"[, "id"]}``.

Every problem is reported with its file and line and nothing is clamped or skipped: a manifest
with one bad row is rejected whole, before any compute is spent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.contract.errors import DataError

REQUIRED = ("image_path", "label", "dataset_name")


def problems_error(problems: Sequence[str], where: str, max_shown: int) -> DataError:
    """One DataError for every problem found ``where`` ("in FILE"), the first ``max_shown`` of
    them listed: a user fixes a file in one pass, not one error per run."""
    shown = "\n  ".join(problems[:max_shown])
    more = f"\n  ... and {len(problems) - max_shown} more" if len(problems) > max_shown else ""
    return DataError(f"{len(problems)} problem(s) {where}:\n  {shown}{more}")


@dataclass(frozen=True)
class Sample:
    id: str
    image_path: Path
    label: int
    dataset: str
    line: int = 0  # line (JSONL) or row (Parquet) in its manifest, for messages


@dataclass(frozen=True)
class Malformed:
    """A JSONL line that does not parse (reported with its line, never skipped)."""

    message: str


def iter_rows(path: Path, batch_rows: int = 8192) -> Iterator[tuple[int, Any]]:
    """(line, row) of a JSONL manifest or (row number, row) of a Parquet one, streamed: memory
    stays one line (JSONL) or one record batch (Parquet) whatever the file's size. A line that
    does not parse is yielded as ``Malformed``."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        # One column chunk decoded at a time: peak memory is one row group's column.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, use_threads=False):
            for row in batch.to_pylist():
                n += 1
                yield n, row
        return
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, Malformed(f"malformed JSON ({e.msg})")


def _check_row(
    row: Any, where: str, dataset: str, num_classes: int, configured: Sequence[str]
) -> dict[str, Any] | str:
    """The row when it is a valid classification row of ``dataset``, else the problem."""
    if isinstance(row, Malformed):
        return f"{where}: {row.message}"
    if not isinstance(row, dict):
        return f"{where}: expected a JSON object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return f"{where}: missing field(s) {', '.join(missing)}"
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, int):
        return f"{where}: label must be an integer, got {label!r}"
    if not 0 <= label < num_classes:
        return f"{where}: label {label} outside [0, {num_classes}) of dataset {dataset}"
    if configured and row["dataset_name"] not in configured:
        return (
            f"{where}: unknown dataset {row['dataset_name']!r} (configured datasets: "
            f"{', '.join(sorted(configured))})"
        )
    if row["dataset_name"] != dataset:
        return (
            f"{where}: dataset_name {row['dataset_name']!r} but the manifest is "
            f"configured as datasets.{dataset}"
        )
    return row


def read_manifest(
    path: Path,
    dataset: str,
    num_classes: int,
    *,
    max_errors: int = 20,
    configured: Sequence[str] = (),
) -> list[Sample]:
    """Read and check one manifest (JSONL or Parquet); raise DataError listing up to max_errors
    problems, each with its file and line."""
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (datasets.{dataset})")
    samples: list[Sample] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_rows(path):
        checked = _check_row(row, f"{path}:{lineno}", dataset, num_classes, configured)
        if isinstance(checked, str):
            problems.append(checked)
            continue
        image = Path(checked["image_path"])
        if not image.is_absolute():
            image = (path.parent / image).resolve()
        sid = str(checked.get("id", f"{dataset}:{path.name}:{lineno}"))
        if sid in seen:
            problems.append(f"{path}:{lineno}: duplicate id {sid!r} (first on line {seen[sid]})")
            continue
        seen[sid] = lineno
        samples.append(Sample(sid, image, int(checked["label"]), dataset, lineno))
    if problems:
        raise problems_error(problems, f"in {path}", max_errors)
    if not samples:
        raise DataError(f"{path}: manifest has no samples (datasets.{dataset})")
    return samples

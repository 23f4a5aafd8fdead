"""Classification manifests: JSONL lines ``{"image_path", "label", "dataset_name"[, "id"]}``.

Every problem is reported with its file and line and nothing is clamped or skipped: a manifest
with one bad row is rejected whole, before any compute is spent.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

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

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The path as one string: a Path pickles as its parts, which unpickling parses again
        # (11 us a row against 5; the row index unpickles a row every time one is read).
        return _sample, (self.id, str(self.image_path), self.label, self.dataset, self.line)


def _sample(sid: str, image: str, label: int, dataset: str, line: int) -> Sample:
    return Sample(sid, Path(image), label, dataset, line)


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


class Row(Protocol):
    """What the manifest machinery needs of a kind's row: its id and its line."""

    @property
    def id(self) -> str: ...

    @property
    def line(self) -> int: ...


R = TypeVar("R", bound=Row)


def id_key(sid: str) -> int:
    """A 64-bit key of an id: what ``UniqueIds`` keeps of it."""
    return int.from_bytes(
        hashlib.blake2b(sid.encode(), digest_size=8).digest(), "little", signed=True
    )


class UniqueIds:
    """The ids of a streamed manifest, checked for repeats in 8 bytes a row (a dict of the ids
    would take ~100 bytes a row: a GB for ten million rows). ``repeated`` sorts the keys in place
    (no copy: the peak stays 8 bytes a row) and gives the keys that occur more than once; the
    rows that have them are then found by a second pass (``duplicate_problems``), which only a
    manifest with a repeated id pays, and which compares the ids themselves (two ids with one
    key are not a duplicate)."""

    def __init__(self) -> None:
        self._keys = array("q")

    def add(self, sid: str) -> None:
        self._keys.append(id_key(sid))

    def __len__(self) -> int:
        return len(self._keys)

    def repeated(self) -> set[int]:
        if len(self._keys) < 2:
            return set()
        keys = np.frombuffer(self._keys, dtype=np.int64)
        keys.sort()  # in place, in the array's own buffer
        return set(keys[1:][keys[1:] == keys[:-1]].tolist())


def duplicate_problems(ids: UniqueIds, rows: Iterable[Row], path: Path) -> list[str]:
    """One problem per row whose id an earlier row of ``path`` has, in line order (``rows``:
    every row again, read only when some key repeats)."""
    keys = ids.repeated()
    if not keys:
        return []
    first: dict[str, int] = {}
    found: list[tuple[int, str]] = []
    for row in rows:
        if id_key(row.id) not in keys:
            continue
        if row.id in first:
            message = f"{path}:{row.line}: duplicate id {row.id!r} (first on line {first[row.id]})"
            found.append((row.line, message))
        else:
            first[row.id] = row.line
    return [message for _, message in sorted(found)]


def checked_list(rows: Iterable[R], problems: list[str], path: Path, max_errors: int) -> list[R]:
    """Every row of a kind's stream (``rows``, which appends each bad row's problem to
    ``problems``), its ids checked unique; DataError listing the problems, if any."""
    out: list[R] = []
    ids = UniqueIds()
    for row in rows:
        ids.add(row.id)
        out.append(row)
    problems += duplicate_problems(ids, out, path)
    if problems:
        raise problems_error(problems, f"in {path}", max_errors)
    return out


def manifest_path(path: Path, dataset: str) -> Path:
    """``path``, or DataError when the manifest is not there."""
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (datasets.{dataset})")
    return path


def iter_manifest(
    path: Path,
    dataset: str,
    num_classes: int,
    problems: list[str],
    *,
    configured: Sequence[str] = (),
) -> Iterator[Sample]:
    """The checked rows of one classification manifest (JSONL or Parquet), streamed; each bad
    row's problem, with its file and line, is appended to ``problems``. Ids are not checked
    here (``checked_list``, ``workers.data.index``). DataError at the end when nothing was read
    and nothing was wrong."""
    manifest_path(path, dataset)
    n = 0
    for lineno, row in iter_rows(path):
        checked = _check_row(row, f"{path}:{lineno}", dataset, num_classes, configured)
        if isinstance(checked, str):
            problems.append(checked)
            continue
        image = Path(checked["image_path"])
        if not image.is_absolute():
            image = (path.parent / image).resolve()
        sid = str(checked.get("id", f"{dataset}:{path.name}:{lineno}"))
        n += 1
        yield Sample(sid, image, int(checked["label"]), dataset, lineno)
    if not n and not problems:
        raise DataError(f"{path}: manifest has no samples (datasets.{dataset})")


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
    problems: list[str] = []
    rows = iter_manifest(path, dataset, num_classes, problems, configured=configured)
    return checked_list(rows, problems, path, max_errors)

"""The declarations every benchmark module uses: a `Benchmark` (the columns it reads, the split
lmms-eval evaluates, the manifests it writes, and `convert`, one source row to one manifest row),
the readers of column values, and the builders of ``mcq`` and ``vqa`` rows.

A converter raises `RowError` (column, message) for a row it cannot convert; the driver
(``convert.py``) adds the file, the row number and the row id, collects every problem and writes
nothing when there is one. What a converter deliberately drops or changes (MMBench's empty
options, ...) it counts with `Context.note`; the counts are logged, never silent.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.data.benchmarks.images import Images

LETTERS = "ABCDEFGHIJ"
"""Option letters of a multiple-choice row: 2 to 10 options."""


class RowError(Exception):
    """One row cannot be converted; the driver adds the file, row number and row id."""

    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


@dataclass(frozen=True)
class SourceRow:
    file: Path
    number: int  # 1-based, within ``file``
    ordinal: int  # 0-based, over the whole split in source order (the id of id-less benchmarks)
    values: dict[str, Any]  # the columns read; an optional column the source lacks is absent


@dataclass(frozen=True)
class Output:
    """A manifest a benchmark writes and the ``[datasets.X]`` table that reads it."""

    manifest: str  # file stem; the main output's is ``eval`` (``train`` for a training split)
    kind: str
    metrics: tuple[str, ...]
    table_suffix: str = ""  # the table is [datasets.<name><suffix>]
    description: str = ""
    settings: tuple[tuple[str, str], ...] = ()  # other keys of the table (e.g. prompt_style)


Converted = tuple[str, dict[str, Any]]
"""(output key, manifest row) of one source row."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: where lmms-eval takes it from, what it reads, what it writes."""

    name: str
    source: str
    """The Hugging Face dataset (and config) lmms-eval evaluates, for messages."""
    split: str
    """The split lmms-eval evaluates (``test_split`` of its task YAML)."""
    required: tuple[str, ...]
    optional: tuple[str, ...]
    outputs: dict[str, Output]
    """Output key -> output; the first is the main one (always written)."""
    row_id: Callable[[SourceRow], str]
    """The row's id in the source (an id column, else its position), for ids and messages."""
    convert: Callable[[SourceRow, Context, str], Converted]
    finish: Callable[[Context], None] | None = None
    """Called once every row is converted (checks over the whole split, counted as notes)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


@dataclass
class Context:
    """What a benchmark's ``convert`` sees besides its row."""

    images: Images
    notes: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)  # occurrences per key (MME's pairs)

    def note(self, what: str, n: int = 1) -> None:
        """Count something dropped or changed on purpose; logged at the end."""
        self.notes[what] += n


# --------------------------------------------------------------------------- values


def is_missing(value: Any) -> bool:
    """None, NaN, an empty string or the string "nan" (pandas' missing value written as text)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in {"", "nan"}


def text(row: SourceRow, column: str) -> str:
    value = row.values.get(column)
    if not isinstance(value, str) or not value.strip():
        raise RowError(column, f"expected a non-empty string, got {value!r}")
    return value


def optional_text(row: SourceRow, column: str) -> str | None:
    value = row.values.get(column)
    return None if is_missing(value) else str(value)


def integer(row: SourceRow, column: str) -> int:
    """An integer column, or an integer written as text (MMBench's ``index`` is a string in
    some uploads)."""
    value = row.values.get(column)
    if isinstance(value, bool):
        raise RowError(column, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise RowError(column, f"expected an integer, got {value!r}")


def strings(row: SourceRow, column: str) -> list[str]:
    """A list-of-strings column (a lone string is a list of one)."""
    value = row.values.get(column)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError(column, f"expected a list of strings, got {value!r}")
    return value


def most_common(answers: list[str], column: str) -> str:
    """The most frequent non-blank answer; ties go to the first given."""
    counts = Counter(a.strip() for a in answers if a.strip())
    if not counts:
        raise RowError(column, f"no non-blank answer in {answers!r}")
    return counts.most_common(1)[0][0]


def mcq_row(
    native_id: str,
    *,
    images: list[Path],
    question: str,
    hint: str | None,
    options: list[str],
    answer: str,
    category: str | None,
    group: str | None,
    text: str | None = None,
) -> dict[str, Any]:
    """A row of the ``mcq`` kind: options in letter order, the answer a letter among them
    (``text``: the question as the source phrases it, for a prompt style that uses it). The
    driver prefixes the id with the dataset name and adds ``dataset_name``."""
    if not 2 <= len(options) <= len(LETTERS):
        raise RowError("options", f"{len(options)} option(s); a multiple-choice row has 2 to 10")
    if answer not in LETTERS[: len(options)]:
        raise RowError(
            "answer", f"{answer!r} is not one of the options' letters {LETTERS[: len(options)]}"
        )
    return {
        "id": native_id,
        "images": [str(p) for p in images],
        "question": question,
        "hint": hint,
        "options": options,
        "answer": answer,
        "category": category,
        "group": group,
    } | ({} if text is None else {"text": text})


def vqa_row(
    native_id: str,
    *,
    images: list[Path],
    prompt: str,
    references: list[str],
    answer_column: str,
    category: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """A row of the ``vqa`` kind (workers/data/vqa.parse_vqa_row) with every gold answer in
    ``references``; the turn's answer is the most common reference. The driver prefixes the id
    with the dataset name and adds ``dataset_name``."""
    if not images:
        raise RowError(None, "no image: a vqa row needs at least one")
    row: dict[str, Any] = {
        "id": native_id,
        "images": [str(p) for p in images],
        "texts": [{"user": prompt, "assistant": most_common(references, answer_column)}],
        "references": references,
    }
    if category is not None:
        row["category"] = category
    if group is not None:
        row["group"] = group
    return row


def ordinal_id(row: SourceRow) -> str:
    """The id of a benchmark without an id column: the row's position in the split."""
    return f"{row.ordinal:07d}"


def column_id(column: str) -> Callable[[SourceRow], str]:
    """The id of a benchmark with an id column (an integer or a string)."""

    def row_id(row: SourceRow) -> str:
        value = row.values.get(column)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise RowError(column, f"expected an id (an integer or a string), got {value!r}")

    return row_id

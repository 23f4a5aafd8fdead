"""Reading one split of a Hugging Face dataset kept offline, with pyarrow.

A source is one Parquet file, a folder of Parquet files (searched recursively, e.g. MMMU's one
folder per subject), or a ``datasets`` ``save_to_disk`` folder (``dataset_info.json``,
``state.json`` and ``data-*.arrow`` files in Arrow IPC stream format; a ``DatasetDict`` has one
such folder per split and a ``dataset_dict.json``). Rows are read a record batch at a time, only
the columns the benchmark reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.contract.errors import DataError
from workers.data.benchmarks.common import Benchmark, SourceRow

logger = logging.getLogger("orch.prepare")

SPLIT_WORDS = frozenset({"train", "validation", "valid", "val", "dev", "test", "testmini", "eval"})
"""Names a Parquet file (``dev-00000-of-00001.parquet``) or its folder (``en/dev/0000.parquet``)
carries when it holds one split of several."""


def _split_name(path: Path) -> str | None:
    head = path.name.split("-", 1)[0].split(".", 1)[0].lower()
    if head in SPLIT_WORDS:
        return head
    return path.parent.name.lower() if path.parent.name.lower() in SPLIT_WORDS else None


def _arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if state.is_file():
        listed = json.loads(state.read_text()).get("_data_files") or []
        files = [folder / f["filename"] for f in listed if isinstance(f, dict) and "filename" in f]
        if files:
            return files
    return sorted(folder.glob("*.arrow"))


def _state_split(folder: Path) -> str | None:
    state = folder / "state.json"
    if not state.is_file():
        return None
    split = json.loads(state.read_text()).get("_split")
    return str(split) if split else None


def select_split(src: Path, requested: str | None, default: str) -> tuple[str, list[Path]]:
    """(split, files) of the source. A source that holds one split (one file, a save_to_disk
    split, Parquet files without split names) is used whole; of several, ``requested`` (else the
    benchmark's default) is chosen, and a split that is not there is an error listing those
    that are."""
    want = requested or default
    if src.is_file():
        if src.suffix not in {".parquet", ".arrow"}:
            raise DataError(f"{src}: not a Parquet (.parquet) or Arrow (.arrow) file")
        return _single(src, _split_name(src), requested, default, [src])
    if not src.is_dir():
        raise DataError(f"{src}: not found")
    if (src / "dataset_dict.json").is_file():
        splits = [str(s) for s in json.loads((src / "dataset_dict.json").read_text())["splits"]]
        if want not in splits:
            raise DataError(f"{src}: no split {want!r} in this DatasetDict; splits: {splits}")
        return want, _arrow_files(src / want)
    arrows = _arrow_files(src)
    if arrows:
        return _single(src, _state_split(src), requested, default, arrows)
    parquet = sorted(src.rglob("*.parquet"))
    if not parquet:
        raise DataError(
            f"{src}: neither Parquet files (*.parquet, searched recursively) nor a save_to_disk "
            "folder (state.json, data-*.arrow)"
        )
    groups: dict[str | None, list[Path]] = {}
    for f in parquet:
        groups.setdefault(_split_name(f), []).append(f)
    if len(groups) == 1:
        (name, files), *_ = groups.items()
        return _single(src, name, requested, default, files)
    if want not in groups:
        found = sorted(str(k) for k in groups)
        raise DataError(f"{src}: no {want!r} split among its Parquet files; splits: {found}")
    others = {str(k): len(v) for k, v in groups.items() if k != want}
    logger.info("%s: the %s split; Parquet files of other splits not read: %s", src, want, others)
    return want, groups[want]


def _single(
    src: Path, named: str | None, requested: str | None, default: str, files: list[Path]
) -> tuple[str, list[Path]]:
    if requested is not None and named is not None and named != requested:
        raise DataError(f"{src}: holds the {named!r} split, not --split {requested!r}")
    return named or requested or default, files


def _open(path: Path) -> tuple[list[str], Callable[[list[str]], Iterator[list[dict[str, Any]]]]]:
    """Column names of one file and a reader of record batches (as row dicts) of some columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)

        def parquet_batches(columns: list[str]) -> Iterator[list[dict[str, Any]]]:
            for batch in pf.iter_batches(batch_size=64, columns=columns, use_threads=False):
                yield batch.to_pylist()

        return list(pf.schema_arrow.names), parquet_batches

    def reader() -> Any:
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_stream(source)  # what save_to_disk writes
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source)

    names = list(reader().schema.names)

    def arrow_batches(columns: list[str]) -> Iterator[list[dict[str, Any]]]:
        opened = reader()
        if isinstance(opened, pa.ipc.RecordBatchStreamReader):
            batches: Iterator[Any] = iter(opened)
        else:
            batches = (opened.get_batch(i) for i in range(opened.num_record_batches))
        for batch in batches:
            yield batch.select(columns).to_pylist()

    return names, arrow_batches


def read_rows(bench: Benchmark, files: list[Path], max_samples: int | None) -> Iterator[SourceRow]:
    """Every row of the split, in source order, with the benchmark's columns; a file missing a
    required column is an error naming the file, the column and what it has."""
    import pyarrow as pa

    opened = []
    problems = []
    for f in files:
        try:
            names, batches = _open(f)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f}: cannot be read as Parquet or Arrow ({e})") from None
        missing = [c for c in bench.required if c not in names]
        if missing:
            problems.append(
                f"{f}: no column(s) {', '.join(repr(c) for c in missing)} that {bench.name} "
                f"needs ({bench.source}); columns found: {names}"
            )
        opened.append((f, [c for c in bench.columns if c in names], batches))
    if problems:
        raise DataError("\n".join(problems))
    ordinal = 0
    for f, columns, batches in opened:
        number = 0
        for batch in batches(columns):
            for values in batch:
                if max_samples is not None and ordinal >= max_samples:
                    return
                number += 1
                yield SourceRow(f, number, ordinal, values)
                ordinal += 1

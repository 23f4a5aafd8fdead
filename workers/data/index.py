"""The rows of a manifest in an on-disk index, built once, shared by every process.

A training worker used to read its whole train manifest into Python objects (~0.56 KB a row in
every process that held them: tens of GB per rank at FineVision's size). Now each split of each
dataset is read once, streamed and checked by its kind, into a folder of two files:

- ``rows.bin``: the kind's rows, each pickled on its own, one after the other;
- ``offsets.i64``: where each row starts (little-endian int64, one more than the rows),

and a ``meta.json`` written last, which is the index's completion marker. Readers
(``RowIndex``) read a row (``pread``) and unpickle it when it is asked for; the files' pages live
in the page cache, shared by the training workers and their loader workers, so a process's
memory does not grow with the manifest. An index is a generic row store rather than a per-kind
set of columns, so a plugin's kind gets one without declaring a schema; a kind adds columns of
its own beside it (``column``: the VQA kind's token lengths).

Indexes live under ``<runs_dir>/.index/`` (no ``spec.json``, so never taken for a run), one
folder per (dataset, split, key). The key digests what the rows depend on: the manifest's
absolute path, size and modification time, the dataset's section (without the keys that do not
change a row: weight, eval_ratio, metrics, description) and the format version (the configured
dataset names change only the wording of a bad row's problem, and an index has no bad row). A
changed manifest gets a new key and so a new index; a second process asking for the same index
while it is built waits for it (a file lock) and reads it. The pre-flight
(`orch validate`, `orch submit`) builds them; training and evaluation open them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import DataError
from orchestrator.contract.kinds import Split, get_kind
from orchestrator.contract.layout import index_root
from orchestrator.contract.spec import DatasetSpec, JobSpec
from workers.data.manifest import UniqueIds, duplicate_problems, problems_error

logger = logging.getLogger("orch.data")

VERSION = 1
ROWS, OFFSETS, META = "rows.bin", "offsets.i64", "meta.json"
_NOT_ROW_KEYS = {"weight", "eval_ratio", "metrics", "description"}
_FLUSH_ROWS = 65536


class RowIndex(Sequence[Any]):
    """A built index: ``len``, ``index[i]`` (one row, unpickled), slices, iteration. It pickles
    as its folder, so a DataLoader worker or a Ray task opens the same files again.

    Rows are read with ``pread`` from the page cache, which every process shares, rather than
    through a memory mapping: a mapping counts in each process's RSS the pages the kernel maps
    around every page touched (64 KB of fault-around per random row), which grew a training
    worker by 51 MB over 30 steps on a 3-million-row index; ``pread`` costs one system call."""

    built_here = False  # built by the ensure_index call that returned it (on_build saw each row)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = json.loads((self.path / META).read_text())
        self._open()

    def _open(self) -> None:
        self._n = (self.path / OFFSETS).stat().st_size // 8 - 1
        self._off_fd = os.open(self.path / OFFSETS, os.O_RDONLY | os.O_CLOEXEC)
        self._rows_fd = os.open(self.path / ROWS, os.O_RDONLY | os.O_CLOEXEC)

    def __del__(self) -> None:
        for fd in (getattr(self, "_off_fd", None), getattr(self, "_rows_fd", None)):
            if fd is not None:
                os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.meta = state["path"], state["meta"]
        self._open()

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = self._n
        if not -n <= i < n:
            raise IndexError(f"row {i} of an index of {n} rows ({self.path})")
        i %= n
        start, end = np.frombuffer(os.pread(self._off_fd, 16, 8 * i), dtype="<i8").tolist()
        return pickle.loads(os.pread(self._rows_fd, end - start, start))

    def __iter__(self) -> Iterator[Any]:
        """Every row in order, read a block of rows at a time."""
        for first in range(0, self._n, _FLUSH_ROWS):
            count = min(_FLUSH_ROWS, self._n - first)
            offsets = np.frombuffer(
                os.pread(self._off_fd, 8 * (count + 1), 8 * first), dtype="<i8"
            ).tolist()
            blob = os.pread(self._rows_fd, offsets[-1] - offsets[0], offsets[0])
            base = offsets[0]
            for k in range(count):
                yield pickle.loads(blob[offsets[k] - base : offsets[k + 1] - base])


class Column:
    """A column of an index (``column``) read a row at a time with ``pread``, as RowIndex
    reads rows (no mapping in every process's RSS); pickles as its path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open()

    def _open(self) -> None:
        head = np.load(self.path, mmap_mode="r")  # the header: shape, dtype, data offset
        self.shape, self.dtype, self._offset = head.shape, head.dtype, head.offset
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del head
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._open()

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"row {i} of a column of {self.shape[0]} rows ({self.path})")
        raw = os.pread(self._fd, self._row, self._offset + i * self._row)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape[1:])

    def read(self) -> np.ndarray:
        """The whole column, in memory."""
        return np.load(self.path)


@dataclass(frozen=True)
class IndexKey:
    dataset: str
    split: Split
    manifest: Path
    digest: str

    @property
    def folder(self) -> str:
        return f"{self.dataset}.{self.split}.{self.digest}"


def index_key(name: str, ds: DatasetSpec, split: Split) -> IndexKey:
    """The key of a split's index: what its rows depend on (see the module docstring)."""
    manifest = ds.manifest(split).absolute()
    try:
        st = manifest.stat()
    except FileNotFoundError:
        raise DataError(f"{manifest}: manifest not found (datasets.{name})") from None
    section = ds.model_dump(mode="json", exclude=_NOT_ROW_KEYS | {"train", "eval"})
    what = {
        "version": VERSION,
        "dataset": name,
        "split": split,
        "manifest": str(manifest),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "section": section,
    }
    digest = hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=8).hexdigest()
    return IndexKey(name, split, manifest, digest)


def open_index(
    spec: JobSpec,
    name: str,
    split: Split,
    *,
    root: Path | None = None,
    on_build: Callable[[Any], None] | None = None,
) -> RowIndex:
    """The index of a split of ``spec``'s dataset ``name``: opened when it is built and current,
    else built now (DataError listing the manifest's problems, and no index, when it has any)."""
    ds = spec.datasets[name]
    root = root or index_root(spec.runs_dir)
    return ensure_index(name, ds, split, list(spec.datasets), root, on_build=on_build)


def ensure_index(
    name: str,
    ds: DatasetSpec,
    split: Split,
    configured: Sequence[str],
    root: Path,
    *,
    on_build: Callable[[Any], None] | None = None,
) -> RowIndex:
    """``open_index`` of one dataset section. ``on_build`` is called with every row when the
    index is built by this call (the pre-flight checks each row's images then, in the same
    pass); when the index was there it is not called, and ``built_here`` is False."""
    key = index_key(name, ds, split)
    folder = root / key.folder
    built = False
    if not (folder / META).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with (root / f"{key.folder}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then open its index
            try:
                if not (folder / META).is_file():
                    _build(name, ds, split, configured, key, folder, on_build)
                    built = True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    index = RowIndex(folder)
    index.built_here = built
    return index


def _rows(
    name: str, ds: DatasetSpec, split: Split, configured: Sequence[str], problems: list[str]
) -> tuple[Iterable[Any], bool]:
    """(the rows, whether their ids are still to check): the kind's stream (``stream``), or, for
    a plugin kind that only has ``read``, its list, which ``read`` has checked whole."""
    kind = get_kind(ds.kind)
    stream = getattr(kind, "stream", None)
    if stream is None:
        return kind.read(name, ds, split, configured), False
    return stream(name, ds, split, configured, problems), True


def _build(
    name: str,
    ds: DatasetSpec,
    split: Split,
    configured: Sequence[str],
    key: IndexKey,
    folder: Path,
    on_build: Callable[[Any], None] | None,
) -> None:
    """Stream the rows into a temporary folder next to ``folder``, check their ids, then rename
    it into place with its meta.json last inside: a crash leaves a ``.tmp`` folder, never an
    index that looks complete."""
    t0 = time.perf_counter()
    for stale in folder.parent.glob(f"{folder.name}.tmp*"):
        shutil.rmtree(stale)  # a builder that died; this one holds the lock
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    problems: list[str] = []
    ids = UniqueIds()
    try:
        offsets = array("q", [0])
        pos = 0
        rows, check_ids = _rows(name, ds, split, configured, problems)
        n = 0
        with (tmp / ROWS).open("wb") as rows_f, (tmp / OFFSETS).open("wb") as off_f:
            for row in rows:
                blob = pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)
                rows_f.write(blob)
                pos += len(blob)
                offsets.append(pos)
                n += 1
                if on_build is not None:
                    on_build(row)
                if check_ids:
                    ids.add(str(row.id))
                if len(offsets) >= _FLUSH_ROWS:
                    offsets.tofile(off_f)
                    offsets = array("q")
            offsets.tofile(off_f)
        if check_ids and not problems and n:
            built = RowIndex.__new__(RowIndex)
            built.path, built.meta = tmp, {}
            built._open()
            problems += duplicate_problems(ids, built, key.manifest)
            del built
        if problems:
            raise problems_error(problems, f"in {key.manifest}", 20)
        seconds = time.perf_counter() - t0
        meta = {
            "version": VERSION,
            "dataset": name,
            "split": split,
            "kind": ds.kind,
            "manifest": str(key.manifest),
            "rows": n,
            "bytes": pos,
            "build_s": round(seconds, 3),
        }
        atomic_write_json(tmp / META, meta)
        if folder.exists():
            shutil.rmtree(folder)  # a stale folder without its meta.json: never complete
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "datasets.%s.%s: indexed %d rows of %s in %.1f s (%.0f rows/s, %.1f MB)",
        name,
        split,
        n,
        key.manifest,
        seconds,
        n / max(seconds, 1e-9),
        pos / 2**20,
    )


def column(index: RowIndex, name: str, compute: Callable[[RowIndex], np.ndarray]) -> Column:
    """A derived column of an index (one value, or a fixed-size row of values, per row), kept
    beside it as ``<name>.npy``: computed once (``compute``, under a file lock, so
    concurrent callers compute it once), then read by every process. ``name`` must digest what
    the values depend on beyond the rows (a tokenizer, an image size limit)."""
    path = index.path / f"{name}.npy"
    if not path.is_file():
        with (index.path / f"{name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not path.is_file():
                    t0 = time.perf_counter()
                    values = np.ascontiguousarray(compute(index))
                    if len(values) != len(index):
                        raise ValueError(
                            f"column {name}: {len(values)} values for {len(index)} rows"
                        )
                    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
                    with tmp.open("wb") as f:
                        np.save(f, values)
                    os.replace(tmp, path)
                    logger.info(
                        "%s: column %s of %d rows in %.1f s",
                        index.path.name,
                        name,
                        len(values),
                        time.perf_counter() - t0,
                    )
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return Column(path)

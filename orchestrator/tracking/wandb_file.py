"""Read what a wandb run wrote to its `.wandb` transaction log (offline runs especially).

wandb 0.31 ships no Python reader (wandb.sdk.internal.datastore is gone). The format,
as written by wandb-core (core/internal/transactionlog + core/pkg/leveldb, a port of
the LevelDB log format):

- a 7-byte file header `<4sHB`: b":W&B", 0xBEE1, version 0. It is part of the first
  block: blocks are 32 KiB counted from the start of the file.
- chunks, each with a 7-byte header `<IHB` (checksum, payload length, chunk type) and
  the payload. Type 1 is a whole record; 2, 3, 4 are the first, middle and last chunk
  of a record split over blocks. A chunk never crosses a block boundary; fewer than 7
  bytes left in a block are zero padding.
- the checksum is the standard (IEEE) CRC-32 of the type byte followed by the payload
  (`CRCAlgoIEEE` in wandb-core, i.e. `zlib.crc32`); it is verified.
- each record is a serialized `wandb.proto.wandb_internal_pb2.Record`.

A truncated last chunk (a run still writing, or killed mid-write) ends the read with a
warning; anything else malformed raises WandbFileError.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.tracking.base import LoggedState

logger = logging.getLogger(__name__)

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

_RUN_DIR = re.compile(r"^offline-run-(\d{8}_\d{6})-(.+)$")


class WandbFileError(ValueError):
    """A .wandb file that is not one, or is corrupt."""


@dataclass
class WandbOfflineRun:
    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict per history row, values json-decoded: {"eval/step": 20, "_step": 3, ...}.
    A nested key (a dict that was logged) becomes nested dicts again."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The last value of each summary key (explicit updates and logged rows alike)."""
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    exit_code: int | None = None
    """None when the file has no exit record (the run has not finished, or crashed)."""


def find_offline_runs(wandb_dir: Path) -> list[Path]:
    """The `.wandb` files of the offline runs under `wandb_dir` (a `.../wandb` directory),
    oldest first. A resumed run has one file per start, each in its own directory."""

    def key(path: Path) -> tuple[str, int, str]:
        m = _RUN_DIR.match(path.parent.name)
        if m is None:
            return ("", 0, str(path))
        stamp, rest = m.groups()
        run_id = path.stem.removeprefix("run-")
        # wandb adds "-1", "-2", ... when a run directory of that second already exists
        tail = rest.removeprefix(run_id).removeprefix("-")
        return (stamp, int(tail) if tail.isdigit() else 0, str(path))

    return sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"), key=key)


def iter_chunks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(chunk type, payload) of each chunk after the file header."""
    pos = FILE_HEADER.size
    while pos < len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            pos += left_in_block  # block trailer: zero padding
            continue
        if pos + CHUNK_HEADER.size > len(data):
            logger.warning("truncated chunk header at byte %d; stopping there", pos)
            return
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if checksum == 0 and length == 0 and kind == 0:
            pos += left_in_block  # a zeroed rest of block (LevelDB readers skip these too)
            continue
        start = pos + CHUNK_HEADER.size
        end = start + length
        if length > left_in_block - CHUNK_HEADER.size:
            raise WandbFileError(f"chunk at byte {pos} overflows its block")
        if end > len(data):
            logger.warning("truncated chunk at byte %d; stopping there", pos)
            return
        payload = data[start:end]
        if zlib.crc32(bytes([kind]) + payload) != checksum:
            raise WandbFileError(f"checksum mismatch in chunk at byte {pos}")
        yield kind, payload
        pos = end


def iter_record_bytes(data: bytes) -> Iterator[bytes]:
    """The serialized records of a whole .wandb file (header checked)."""
    if len(data) < FILE_HEADER.size:
        raise WandbFileError("file too short for a .wandb header")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise WandbFileError(f"not a .wandb file (header {ident!r} {magic:#x})")
    if version != FILE_VERSION:
        raise WandbFileError(f"unsupported .wandb version {version}")
    pending: list[bytes] | None = None
    for kind, payload in iter_chunks(data):
        if kind == FULL:
            if pending is not None:
                raise WandbFileError("whole record inside a split record")
            yield payload
        elif kind == FIRST:
            if pending is not None:
                raise WandbFileError("split record starts inside another")
            pending = [payload]
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise WandbFileError("continuation chunk without a first chunk")
            pending.append(payload)
            if kind == LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise WandbFileError(f"unknown chunk type {kind}")
    if pending is not None:
        logger.warning("file ends inside a split record; its chunks are ignored")


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _remove(target: dict[str, Any], path: list[str]) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            return
        target = child
    target.pop(path[-1], None)


def _apply(target: dict[str, Any], record: Any) -> None:
    """Apply a ConfigRecord or SummaryRecord (update and remove items) to `target`."""
    for item in record.update:
        _set(target, _item_path(item), json.loads(item.value_json))
    for item in record.remove:
        _remove(target, _item_path(item))


def read_offline_run(path: Path) -> WandbOfflineRun:
    """History, summary, config, run id and exit code from one `.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    run = WandbOfflineRun(path=path)
    for raw in iter_record_bytes(path.read_bytes()):
        record = pb.Record()  # type: ignore[attr-defined]  # re-exported by a star import
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _item_path(item), json.loads(item.value_json))
            run.history.append(row)
        elif kind == "summary":
            _apply(run.summary, record.summary)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "run":
            run.run_id = record.run.run_id or run.run_id
            _apply(run.config, record.run.config)
            _apply(run.summary, record.run.summary)
        elif kind == "exit":
            run.exit_code = int(record.exit.exit_code)
    return run


def logged_state(wandb_dir: Path, run_id: str) -> LoggedState:
    """What the offline files of run ``run_id`` actually contain. wandb writes its file in
    blocks; rows logged just before a SIGKILL may never reach it, so this, not what the
    controller believes it logged, is what a restarted controller must trust."""
    train, evals, final = 0, set(), False
    for path in find_offline_runs(wandb_dir):
        run = read_offline_run(path)
        if run.run_id != run_id:
            continue
        for row in run.history:
            if "train/step" in row:
                train = max(train, int(row["train/step"]))
            if "eval/step" in row and any(k.startswith("eval/overall/") for k in row):
                evals.add(int(row["eval/step"]))
            final = final or "final/step" in row
    return LoggedState(train, frozenset(evals), final)

"""The driver of `orch data prepare <benchmark>`: one split in, manifests, images and the
``[datasets.NAME]`` tables that read them out.

Every bad row is collected with its file, row (1-based, in that file), id and column, and the
conversion stops before any manifest is written. Manifests are written atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.contract.atomic import atomic_write_text
from orchestrator.contract.errors import DataError
from workers.data.benchmarks.common import Benchmark, Context, RowError
from workers.data.benchmarks.images import Images
from workers.data.benchmarks.source import read_rows, select_split
from workers.data.manifest import problems_error

logger = logging.getLogger("orch.prepare")

TRAIN_SPLITS = frozenset({"train"})
MAX_SHOWN = 20


@dataclass
class Table:
    """A ``[datasets.NAME]`` table to print: what ``orch data prepare`` tells the user."""

    name: str
    kind: str
    metrics: tuple[str, ...]
    train: Path
    eval: Path | None  # None when the split is a training split
    rows: int
    description: str
    settings: tuple[tuple[str, str], ...] = ()


@dataclass
class PreparedBenchmark:
    benchmark: str
    split: str
    out: Path
    tables: list[Table]
    images: int
    notes: dict[str, int]


def _write_manifest(rows: list[dict[str, Any]], path: Path, fmt: str) -> Path:
    target = path.with_suffix(f".{fmt}")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(target)
    else:
        atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return target


def _convert_rows(
    bench: Benchmark, files: list[Path], max_samples: int | None, ctx: Context, name: str
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every source row converted, by output; the problems (file, row, id, column) of those
    that could not be."""
    rows: dict[str, list[dict[str, Any]]] = {key: [] for key in bench.outputs}
    problems: list[str] = []
    first_seen: dict[str, str] = {}
    for row in read_rows(bench, files, max_samples):
        rid: str | None = None
        where = f"{row.file}: row {row.number}"
        try:
            rid = bench.row_id(row)
            key, converted = bench.convert(row, ctx, rid)
        except RowError as e:
            shown = f" (id {rid})" if rid is not None else ""
            col = f": column {e.column!r}" if e.column else ""
            problems.append(f"{where}{shown}{col}: {e.message}")
            continue
        table = f"{name}{bench.outputs[key].table_suffix}"
        row_id = f"{table}/{converted.pop('id')}"
        if row_id in first_seen:  # e.g. two configs' files (MMBench en and cn) in one source
            problems.append(f"{where}: duplicate id {row_id!r} (first at {first_seen[row_id]})")
            continue
        first_seen[row_id] = where
        rows[key].append({"id": row_id, "dataset_name": table, **converted})
    return rows, problems


def _note_images(ctx: Context) -> None:
    if ctx.images.shared:
        ctx.note("rows sharing an image another row had written", ctx.images.shared)
    if ctx.images.key_mismatch:
        ctx.note(
            "rows of an image group whose image bytes differ (the first kept)",
            ctx.images.key_mismatch,
        )


def prepare(
    bench: Benchmark,
    src: Path,
    out: Path,
    name: str,
    *,
    split: str | None = None,
    fmt: str = "jsonl",
    max_samples: int | None = None,
) -> PreparedBenchmark:
    """Convert one split of ``bench`` from ``src`` into manifests and images under ``out``."""
    chosen, files = select_split(src, split, bench.split)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(Images(images_dir, src if src.is_dir() else src.parent))
    rows, problems = _convert_rows(bench, files, max_samples, ctx, name)
    if bench.finish is not None:
        bench.finish(ctx)
    if problems:
        raise problems_error(
            problems,
            f"converting {src} as {bench.name} (split {chosen}); no manifest was written",
            MAX_SHOWN,
        )
    main, *_ = bench.outputs
    if not rows[main]:
        raise DataError(f"{src}: no {bench.name} rows in split {chosen}")
    training = chosen in TRAIN_SPLITS
    tables = []
    for key, output in bench.outputs.items():
        if not rows[key]:
            logger.info("%s: no rows for %s (%s); not written", bench.name, key, output.manifest)
            continue
        stem = output.manifest
        if training:
            stem = "train" if key == main else f"{output.manifest}_train"
        path = _write_manifest(rows[key], out / stem, fmt)
        tables.append(
            Table(
                name=f"{name}{output.table_suffix}",
                kind=output.kind,
                metrics=output.metrics,
                train=path,
                eval=None if training else path,
                rows=len(rows[key]),
                description=f"{output.description}, {chosen} split",
                settings=output.settings,
            )
        )
    _note_images(ctx)
    logger.info(
        "prepared %s (split %s): %s; %d images in %s", bench.name, chosen,
        ", ".join(f"{t.rows} rows -> {t.train}" for t in tables), ctx.images.written, images_dir,
    )  # fmt: skip
    for what, n in sorted(ctx.notes.items()):
        logger.info("%s: %s: %d", bench.name, what, n)
    return PreparedBenchmark(bench.name, chosen, out, tables, ctx.images.written, dict(ctx.notes))

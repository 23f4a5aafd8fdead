"""`orch data prepare`: public dataset layouts -> orch manifests (JSONL or Parquet) + label maps.

Kinds:
- ``folders``: ``SRC/<class>/*`` image trees, or ``SRC/train/<class>`` + ``SRC/test/<class>``;
  without split folders, a seeded stratified split of ``eval_fraction``.
- ``food101``: the official Food-101 layout (``images/<class>/<id>.jpg``, ``meta/classes.txt``,
  ``meta/train.txt``, ``meta/test.txt``).
- ``hf``: a Hugging Face dataset saved with ``save_to_disk`` (Arrow stream files) or a folder of
  Parquet files, with an image column (HF Image struct: bytes/path) and a label column (its
  ClassLabel names are read from ``dataset_info.json`` when present); images are written out.
- ``vqa-jsonl``: rows in (or close to) the unified VQA shape, checked and normalised; relative
  image paths resolve against ``--image-root`` folders in order.

Every problem names its file and line (or folder) and stops the conversion; writes are atomic.
``max_samples`` keeps the first N samples of each split in source order (per class for the
class layouts: a stratified cap).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.contract.atomic import atomic_write_text
from orchestrator.contract.errors import DataError

logger = logging.getLogger("orch.prepare")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Prepared:
    out: Path
    splits: dict[str, int]  # split -> rows written
    num_classes: int | None


def _progress(total: int, what: str) -> Any:
    from rich.progress import Progress

    progress = Progress(transient=True)
    task = progress.add_task(what, total=total)
    return progress, task


def _write_rows(rows: list[dict[str, Any]], path: Path, fmt: str) -> Path:
    target = path.with_suffix(f".{fmt}")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(target)
    else:
        atomic_write_text(target, "".join(json.dumps(r) + "\n" for r in rows))
    return target


def _finish(
    out: Path,
    name: str,
    splits: dict[str, list[dict[str, Any]]],
    classes: list[str] | None,
    fmt: str,
) -> Prepared:
    out.mkdir(parents=True, exist_ok=True)
    written = {s: len(r) for s, r in splits.items()}
    for split, rows in splits.items():
        if not rows:
            raise DataError(f"{out}: no {split} samples to write for dataset {name}")
        _write_rows(rows, out / split, fmt)
    if classes is not None:
        atomic_write_text(out / "labels.json", json.dumps(classes, indent=1) + "\n")
    logger.info(
        "prepared %s: %s -> %s",
        name,
        ", ".join(f"{n} {s}" for s, n in written.items()),
        out,
    )
    return Prepared(out, written, len(classes) if classes is not None else None)


def _class_rows(
    items: list[tuple[Path, int]], name: str, split: str, max_samples: int | None
) -> list[dict[str, Any]]:
    if max_samples is not None:
        per: dict[int, list[tuple[Path, int]]] = {}
        for it in items:
            per.setdefault(it[1], []).append(it)
        quota = max(1, max_samples // max(1, len(per)))
        items = [it for label in sorted(per) for it in per[label][:quota]][:max_samples]
    return [
        {"id": f"{name}/{split}/{i:07d}", "image_path": str(p), "label": y, "dataset_name": name}
        for i, (p, y) in enumerate(items)
    ]


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def prepare_folders(
    src: Path,
    out: Path,
    name: str,
    *,
    fmt: str = "jsonl",
    max_samples: int | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> Prepared:
    if not src.is_dir():
        raise DataError(f"{src}: not a folder (expected SRC/<class>/<images>)")
    split_dirs = {"train": src / "train", "eval": src / "test"}
    if all(d.is_dir() for d in split_dirs.values()):
        classes = sorted(d.name for d in split_dirs["train"].iterdir() if d.is_dir())
        splits: dict[str, list[tuple[Path, int]]] = {}
        for split, folder in split_dirs.items():
            extra = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in classes)
            if extra:
                raise DataError(f"{folder}: classes {extra} are not in {split_dirs['train']}")
            splits[split] = [
                (p.resolve(), k) for k, c in enumerate(classes) for p in _images_under(folder / c)
            ]
    else:
        classes = sorted(d.name for d in src.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{src}: no class folders (expected SRC/<class>/<images>)")
        rng = random.Random(seed)
        splits = {"train": [], "eval": []}
        for k, c in enumerate(classes):
            files = [p.resolve() for p in _images_under(src / c)]
            if not files:
                raise DataError(f"{src / c}: class folder without images")
            rng.shuffle(files)
            n_eval = round(len(files) * eval_fraction)
            splits["eval"] += [(p, k) for p in files[:n_eval]]
            splits["train"] += [(p, k) for p in files[n_eval:]]
    rows = {s: _class_rows(items, name, s, max_samples) for s, items in splits.items()}
    return _finish(out, name, rows, classes, fmt)


def prepare_food101(
    src: Path, out: Path, name: str, *, fmt: str = "jsonl", max_samples: int | None = None
) -> Prepared:
    meta = src / "meta"
    classes_file = meta / "classes.txt"
    if not classes_file.is_file():
        raise DataError(f"{classes_file}: not found (expected the Food-101 layout: meta/, images/)")
    classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
    index = {c: k for k, c in enumerate(classes)}
    rows: dict[str, list[dict[str, Any]]] = {}
    for split, listing in (("train", meta / "train.txt"), ("eval", meta / "test.txt")):
        if not listing.is_file():
            raise DataError(f"{listing}: not found")
        items: list[tuple[Path, int]] = []
        for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
            entry = line.strip()
            if not entry:
                continue
            cls = entry.split("/", 1)[0]
            if cls not in index:
                raise DataError(f"{listing}:{lineno}: class {cls!r} is not in {classes_file}")
            image = src / "images" / f"{entry}.jpg"
            if not image.is_file():
                raise DataError(f"{listing}:{lineno}: image {image} not found")
            items.append((image.resolve(), index[cls]))
        rows[split] = _class_rows(items, name, split, max_samples)
    return _finish(out, name, rows, classes, fmt)


def _hf_tables(src: Path) -> Iterator[tuple[str, Any]]:
    """(split, pyarrow table) of a save_to_disk folder (one split or a DatasetDict) or Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def arrow_files(folder: Path) -> list[Path]:
        return sorted(folder.glob("*.arrow"))

    if (src / "dataset_dict.json").is_file():
        for split in json.loads((src / "dataset_dict.json").read_text())["splits"]:
            yield from ((split, t) for _, t in _hf_tables(src / split))
        return
    if arrow_files(src):
        tables = []
        for f in arrow_files(src):
            with pa.memory_map(str(f)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        yield src.name, pa.concat_tables(tables)
        return
    parquet = sorted(src.rglob("*.parquet"))
    if not parquet:
        raise DataError(f"{src}: neither a save_to_disk folder (*.arrow) nor Parquet files")
    by_split: dict[str, list[Path]] = {}
    for f in parquet:
        split = "test" if "test" in f.name or "valid" in f.name else "train"
        by_split.setdefault(split, []).append(f)
    for split, files in sorted(by_split.items()):
        yield split, pa.concat_tables([pq.read_table(f) for f in files])


def _hf_label_names(src: Path, column: str) -> list[str] | None:
    for info in (src / "dataset_info.json", *sorted(src.glob("*/dataset_info.json"))):
        if info.is_file():
            feature = json.loads(info.read_text()).get("features", {}).get(column, {})
            if feature.get("_type") == "ClassLabel" and "names" in feature:
                return list(feature["names"])
    return None


def prepare_hf(
    src: Path,
    out: Path,
    name: str,
    *,
    fmt: str = "jsonl",
    max_samples: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> Prepared:
    names = _hf_label_names(src, label_column)
    rows: dict[str, list[dict[str, Any]]] = {}
    labels_seen: set[int] = set()
    for split_name, table in _hf_tables(src):
        split = "eval" if split_name in {"test", "validation", "valid", "eval"} else "train"
        for column in (image_column, label_column):
            if column not in table.column_names:
                raise DataError(
                    f"{src} ({split_name}): no column {column!r}; columns: {table.column_names} "
                    "(choose with --image-column / --label-column)"
                )
        images_dir = out / "images" / split
        images_dir.mkdir(parents=True, exist_ok=True)
        n = table.num_rows if max_samples is None else min(max_samples, table.num_rows)
        progress, task = _progress(n, f"{name} {split}")
        out_rows = rows.setdefault(split, [])
        with progress:
            for i, (image, label) in enumerate(
                zip(
                    table.column(image_column).to_pylist()[:n],
                    table.column(label_column).to_pylist()[:n],
                    strict=True,
                )
            ):
                where = f"{src} ({split_name}) row {i + 1}"
                if not isinstance(label, int) or isinstance(label, bool):
                    raise DataError(f"{where}: label must be an integer, got {label!r}")
                data = image.get("bytes") if isinstance(image, dict) else None
                if not data:
                    raise DataError(f"{where}: the image column holds no image bytes")
                suffix = Path(str(image.get("path") or "x.png")).suffix or ".png"
                target = images_dir / f"{len(out_rows):07d}{suffix}"
                target.write_bytes(data)
                labels_seen.add(label)
                out_rows.append(
                    {
                        "id": f"{name}/{split}/{len(out_rows):07d}",
                        "image_path": str(target.resolve()),
                        "label": label,
                        "dataset_name": name,
                    }
                )
                progress.advance(task)
    if names is None:
        names = [str(k) for k in range(max(labels_seen) + 1)] if labels_seen else []
    return _finish(out, name, rows, names, fmt)


def prepare_vqa_jsonl(
    src: Path,
    out: Path,
    name: str,
    *,
    fmt: str = "jsonl",
    max_samples: int | None = None,
    image_roots: list[Path] | None = None,
) -> Prepared:
    from workers.data.manifest import Malformed, iter_rows
    from workers.data.vqa import parse_vqa_row

    if not src.is_file():
        raise DataError(f"{src}: not found")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, row in iter_rows(src):
        if max_samples is not None and len(rows) >= max_samples:
            break
        where = f"{src}:{lineno}"
        if isinstance(row, Malformed):
            problems.append(f"{where}: {row.message}")
            continue
        if isinstance(row, dict):
            row = {"dataset_name": name, "id": f"{name}/{lineno:07d}"} | row
            row["dataset_name"] = name
        sample, errs = parse_vqa_row(row, where, name, src, image_roots or [])
        if sample is None:
            problems.extend(errs)
            continue
        rows.append(
            {
                "id": sample.id,
                "dataset_name": name,
                "images": [str(p) for p in sample.images],
                "texts": [
                    {"user": t.user, "assistant": t.assistant, **t.ratings} for t in sample.turns
                ],
            }
        )
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {src}:\n  " + "\n  ".join(problems[:20]))
    return _finish(out, name, {"train": rows}, None, fmt)

"""Pre-flight validation of a job's data: every row, and every image (or a sample of them).

`orch validate JOB.toml [--sample K]` and `orch submit` (with a sample) run it before any compute
starts. Each manifest is read with its row checks (parses, required fields, label type and range,
dataset_name configured and matching, ids unique, images exist; a kind's own checks, such as a VQA
sample too long for a pack); then the images are opened and fully decoded in a thread pool, so a
truncated or corrupt file is found now, not at step 40,000. Every problem is reported with its
file and line; nothing is clamped or skipped. It also warns, with counts and examples, about eval
samples whose image is a training image too (the same path, or the same content elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.contract.errors import DataError
from orchestrator.contract.kinds import Split, get_kind
from orchestrator.contract.spec import JobSpec

logger = logging.getLogger("orch.validate")


@dataclass
class DatasetStats:
    name: str
    kind: str
    train: int
    eval: int
    share: float  # of the training mix
    eval_subset: int  # samples in a partial eval (eval_ratio)
    images_checked: int
    leaked: int = 0  # eval samples with an image that is also in the training data


def _content_key(path: Path) -> tuple[int, bytes]:
    """(size, digest of the first 64 KiB): equal for equal files; a match is confirmed on the
    whole file (``_same_content``)."""
    with path.open("rb") as f:
        return path.stat().st_size, hashlib.blake2b(f.read(1 << 16), digest_size=16).digest()


def _same_content(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


@dataclass
class _TrainImages:
    """Every training image of the job (all datasets), by path; by content only for those whose
    size some eval image has (the only ones that can be equal), so that a pre-flight reads no
    image bytes unless a copy may exist."""

    by_path: dict[Path, str] = field(default_factory=dict)  # resolved path -> "manifest:line"
    by_size: dict[int, list[tuple[Path, str]]] = field(default_factory=dict)
    by_key: dict[tuple[int, bytes], list[tuple[Path, str]]] = field(default_factory=dict)

    def add(self, path: Path, where: str) -> None:
        self.by_path.setdefault(path.resolve(), where)
        self.by_size.setdefault(path.stat().st_size, []).append((path, where))

    def index_content(self, eval_sizes: set[int], pool: ThreadPoolExecutor) -> None:
        """Content keys of the training images that have the size of an eval image."""
        files = [f for size in eval_sizes & self.by_size.keys() for f in self.by_size[size]]
        keys = list(pool.map(_content_key, [f[0] for f in files]))
        for (path, where), key in zip(files, keys, strict=True):
            self.by_key.setdefault(key, []).append((path, where))

    def match(self, path: Path) -> tuple[str, str] | None:
        """("same path" | "same content", where in the training data), or None."""
        where = self.by_path.get(path.resolve())
        if where is not None:
            return "same path", where
        if path.stat().st_size not in self.by_size:
            return None  # no training image of this size: nothing to read
        for other, where in self.by_key.get(_content_key(path), []):
            if _same_content(path, other):
                return "same content", where
        return None


def _leaks(
    train: _TrainImages,
    name: str,
    manifest: Path,
    images: list[tuple[int, Path]],
) -> int:
    """Warn (counts and examples) about eval samples whose image is also a training image:
    a benchmark leaking into its own training set is the most common way a score lies."""
    leaked_lines: set[int] = set()
    how: dict[str, int] = {}
    examples: list[str] = []
    for line, path in images:
        found = train.match(path)
        if found is None:
            continue
        leaked_lines.add(line)
        how[found[0]] = how.get(found[0], 0) + 1
        if len(examples) < 3:
            examples.append(f"{manifest}:{line} image {path} ({found[0]} as {found[1]})")
    if leaked_lines:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(how.items()))
        logger.warning(
            "datasets.%s.eval: %d eval sample(s) use an image that is also in the training data "
            "(%s); the score of these samples measures memory, not skill. E.g.: %s",
            name,
            len(leaked_lines),
            counts,
            "; ".join(examples),
        )
    return len(leaked_lines)


def _decode(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unreadable images
        return f"{type(e).__name__}: {e}"
    return None


def _decode_sample(
    manifest: Path, images: list[tuple[int, Path]], sample: int | None, key: str, threads: int
) -> tuple[int, list[str]]:
    """Decode every distinct image (or a seeded sample of ``sample`` of them) once, however many
    rows use it: (how many, the problems, one per row that uses a bad image)."""
    distinct = list(dict.fromkeys(p for _, p in images))
    if sample is not None and sample < len(distinct):
        distinct = random.Random(key).sample(distinct, sample)
    with ThreadPoolExecutor(threads) as pool:
        errors = dict(zip(distinct, pool.map(_decode, distinct), strict=True))
    return len(distinct), [
        f"{manifest}:{line}: image {path} does not decode ({errors[path]})"
        for line, path in images
        if errors.get(path) is not None
    ]


def _count_leaks(
    train: _TrainImages,
    evals: dict[str, tuple[Path, list[tuple[int, Path]]]],
    stats: list[DatasetStats],
    threads: int,
) -> None:
    """Each dataset's eval samples whose image is a training image too (warned about)."""
    eval_sizes = {p.stat().st_size for _, images in evals.values() for _, p in images}
    with ThreadPoolExecutor(threads) as pool:
        train.index_content(eval_sizes, pool)
    for st in stats:
        if st.name in evals:
            st.leaked = _leaks(train, st.name, *evals[st.name])


def validate_data(
    spec: JobSpec, sample: int | None = None, *, seed: int = 0, threads: int = 8
) -> list[DatasetStats]:
    """Check every row and every image (or ``sample`` images per manifest); raise DataError
    listing every problem with its file and line."""
    problems: list[str] = []
    stats: list[DatasetStats] = []
    train = _TrainImages()
    evals: dict[str, tuple[Path, list[tuple[int, Path]]]] = {}
    total_weight = sum(d.mix_weight for d in spec.trained.values())
    configured = list(spec.datasets)
    for name, ds in spec.datasets.items():
        counts: dict[str, int] = {}
        checked = 0
        splits: list[tuple[Split, Path]] = [("eval", ds.eval)]
        if ds.train is not None:  # else eval-only
            splits.insert(0, ("train", ds.train))
        for split, manifest in splits:
            kind = get_kind(ds.kind)
            try:
                rows = kind.read(name, ds, split, configured)
            except DataError as e:
                problems.append(f"datasets.{name}.{split}: {e}")
                continue
            counts[split] = len(rows)
            check_rows = getattr(kind, "check_rows", None)  # an optional hook of a kind
            if check_rows is not None:
                problems += check_rows(spec, name, manifest, rows)
            images = [(line, path) for row in rows for line, path in kind.images(row)]
            problems += [
                f"{manifest}:{line}: image {p} not found" for line, p in images if not p.is_file()
            ]
            images = [(line, p) for line, p in images if p.is_file()]
            if split == "train":
                for line, p in images:
                    train.add(p, f"{manifest}:{line}")
            else:
                evals[name] = (manifest, images)
            decoded, bad = _decode_sample(
                manifest, images, sample, f"{seed}:{name}:{split}", threads
            )
            checked += decoded
            problems += bad
        stats.append(
            DatasetStats(
                name=name,
                kind=ds.kind,
                train=counts.get("train", 0),
                eval=counts.get("eval", 0),
                share=ds.mix_weight / total_weight,
                eval_subset=max(1, round(counts.get("eval", 0) * ds.eval_ratio)),
                images_checked=checked,
            )
        )
    if not problems:
        _count_leaks(train, evals, stats, threads)
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"{len(problems)} data problem(s):\n  {shown}{more}")
    return stats


def render_stats(stats: list[DatasetStats]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="datasets")
    for col in (
        "dataset",
        "kind",
        "train",
        "eval",
        "share of mix",
        "partial eval",
        "images checked",
        "eval leaked",
    ):
        table.add_column(col, justify="left" if col in ("dataset", "kind") else "right")
    for s in stats:
        table.add_row(
            s.name,
            s.kind,
            str(s.train) if s.share else "-",
            str(s.eval),
            f"{100 * s.share:.1f}%" if s.share else "eval only",
            str(s.eval_subset),
            str(s.images_checked),
            str(s.leaked) if s.leaked else "-",
        )
    Console().print(table)

"""Pre-flight validation of a job's data: every row, and every image (or a sample of them).

`orch validate JOB.toml [--sample K]` and `orch submit` (with a sample) run it before any compute
starts. Each manifest is read with its row checks (parses, required fields, label type and range,
dataset_name configured and matching, ids unique, images exist; a kind's own checks, such as a VQA
sample too long for a pack); then the images are opened and fully decoded in a thread pool, so a
truncated or corrupt file is found now, not at step 40,000. Every problem is reported with its
file and line; nothing is clamped or skipped. It also warns, with counts and examples, about eval
samples whose image is a training image too (the same file, or the same content elsewhere).

Everything streams, so that a ten-million-row manifest is checked in the memory of a small one:
the rows go through their index (workers/data/index.py: built here, in one pass, and then
opened by training and evaluation), every image is stat'ed as its row passes, the images to
decode are a bottom-k sample chosen on the way, and the training images are streamed past the
eval images (the small side, held in memory) to find the leaks. Each split logs its rows/s.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class _EvalImage:
    dataset: str
    manifest: Path
    line: int
    path: Path


@dataclass
class _EvalImages:
    """Every eval image of the job, by file (device and inode: the same file under any path)
    and by size, so that the training images can be streamed past them: a training image is
    read only when an eval image has its size (the only ones that can be equal). Memory grows
    with the eval sets, which are small, never with the training data."""

    by_file: dict[tuple[int, int], list[_EvalImage]] = field(default_factory=dict)
    by_size: dict[int, list[_EvalImage]] = field(default_factory=dict)
    found: dict[tuple[str, int], tuple[str, str, Path]] = field(default_factory=dict)
    """(eval dataset, eval line) -> (how, where in the training data, eval image)."""
    _keys: dict[Path, tuple[int, bytes]] = field(default_factory=dict)

    def add(self, image: _EvalImage, st: os.stat_result) -> None:
        self.by_file.setdefault((st.st_dev, st.st_ino), []).append(image)
        self.by_size.setdefault(st.st_size, []).append(image)

    def _key(self, path: Path) -> tuple[int, bytes]:
        if path not in self._keys:
            self._keys[path] = _content_key(path)
        return self._keys[path]

    def check_train(self, path: Path, st: os.stat_result, manifest: Path, line: int) -> None:
        """Record the eval images that are this training image (the same file or its bytes)."""
        sized = self.by_size.get(st.st_size)
        if sized is None:
            return  # no eval image of this size: neither the same file nor the same bytes
        where = f"{manifest}:{line}"
        same = self.by_file.get((st.st_dev, st.st_ino), [])
        for image in same:
            self.found.setdefault((image.dataset, image.line), ("same path", where, image.path))
        others = [i for i in sized if i not in same]
        if not others:
            return
        key = _content_key(path)
        for image in others:
            if self._key(image.path) == key and _same_content(path, image.path):
                self.found.setdefault(
                    (image.dataset, image.line), ("same content", where, image.path)
                )

    def report(self, name: str, manifest: Path) -> int:
        """Warn (counts and examples) about eval samples whose image is also a training image:
        a benchmark leaking into its own training set is the most common way a score lies."""
        mine = sorted((line, f) for (d, line), f in self.found.items() if d == name)
        if not mine:
            return 0
        how: dict[str, int] = {}
        for _, (kind, _, _) in mine:
            how[kind] = how.get(kind, 0) + 1
        examples = [
            f"{manifest}:{line} image {path} ({kind} as {where})"
            for line, (kind, where, path) in mine[:3]
        ]
        logger.warning(
            "datasets.%s.eval: %d eval sample(s) use an image that is also in the training data "
            "(%s); the score of these samples measures memory, not skill. E.g.: %s",
            name,
            len(mine),
            ", ".join(f"{n} {k}" for k, n in sorted(how.items())),
            "; ".join(examples),
        )
        return len(mine)


def _decode(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unreadable images
        return f"{type(e).__name__}: {e}"
    return None


class _ImageSample:
    """The images to decode, chosen while the rows stream past: every distinct image, or with
    ``k`` the k distinct images of smallest seeded hash (a bottom-k sample: each image equally
    likely, the same choice on every run with the seed, and memory for k images only)."""

    def __init__(self, k: int | None, key: str) -> None:
        self.k, self.salt = k, key.encode()
        self.heap: list[tuple[int, str]] = []  # (-hash, path): the k smallest hashes
        self.chosen: set[str] = set()
        self.uses: dict[str, list[int]] = {}  # chosen image -> the lines that use it

    def offer(self, line: int, path: Path) -> None:
        p = str(path)
        if p in self.chosen:
            self.uses[p].append(line)
            return
        if self.k is None:
            self.chosen.add(p)
            self.uses[p] = [line]
            return
        if self.k <= 0:
            return
        h = int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8, key=self.salt).digest())
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, (-h, p))
        elif h < -self.heap[0][0]:
            _, out = heapq.heapreplace(self.heap, (-h, p))
            self.chosen.discard(out)
            del self.uses[out]
        else:
            return
        self.chosen.add(p)
        self.uses[p] = [line]

    def decode(self, manifest: Path, threads: int) -> tuple[int, list[str]]:
        """(images decoded, one problem per row that uses a bad image)."""
        paths = sorted(self.chosen)
        with ThreadPoolExecutor(threads) as pool:
            errors = dict(zip(paths, pool.map(_decode, map(Path, paths)), strict=True))
        bad = [
            (line, f"{manifest}:{line}: image {p} does not decode ({err})")
            for p, err in errors.items()
            if err is not None
            for line in self.uses[p]
        ]
        return len(paths), [m for _, m in sorted(bad)]


@dataclass
class _Split:
    name: str
    split: Split
    manifest: Path
    rows: int = 0
    images: int = 0
    seconds: float = 0.0


def _index(
    spec: JobSpec, name: str, split: Split, on_build: Callable[[Any], None]
) -> tuple[Sequence[Any], bool]:
    """(the rows of a split, through their index, whether ``on_build`` saw each row): the index
    is built here when the job has none yet, and then reused by training and evaluation
    (workers/data/index.py)."""
    from workers.data.index import open_index

    index = open_index(spec, name, split, on_build=on_build)
    return index, index.built_here


def _check_split(
    spec: JobSpec,
    part: _Split,
    sample: int | None,
    seed: int,
    threads: int,
    evals: _EvalImages,
    problems: list[str],
) -> int:
    """Stream one split: its rows (through the index), a kind's own checks, that every image is
    there, the sample of images decoded, and each training image against the eval images.
    Returns the number of images decoded."""
    t0 = time.perf_counter()
    ds = spec.datasets[part.name]
    kind = get_kind(ds.kind)
    chosen = _ImageSample(sample, f"{seed}:{part.name}:{part.split}")
    image_problems: list[str] = []

    def check_images(row: Any) -> None:
        for line, path in kind.images(row):
            try:
                st = os.stat(path)
            except OSError:
                image_problems.append(f"{part.manifest}:{line}: image {path} not found")
                continue
            part.images += 1
            if part.split == "train":
                evals.check_train(path, st, part.manifest, line)
            else:
                evals.add(_EvalImage(part.name, part.manifest, line, path), st)
            chosen.offer(line, path)

    try:
        rows, seen = _index(spec, part.name, part.split, check_images)
    except DataError as e:
        problems.append(f"datasets.{part.name}.{part.split}: {e}")
        return 0
    if not seen:  # the index was there already: its rows stream past once
        for row in rows:
            check_images(row)
    part.rows = len(rows)
    check_rows = getattr(kind, "check_rows", None)  # an optional hook of a kind
    if check_rows is not None:
        problems += check_rows(spec, part.name, part.manifest, rows)
    problems += image_problems
    decoded, bad = chosen.decode(part.manifest, threads)
    problems += bad
    part.seconds = time.perf_counter() - t0
    logger.info(
        "datasets.%s.%s: %d rows and %d images checked, %d decoded, in %.1f s (%.0f rows/s)",
        part.name,
        part.split,
        part.rows,
        part.images,
        decoded,
        part.seconds,
        part.rows / max(part.seconds, 1e-9),
    )
    return decoded


def validate_data(
    spec: JobSpec, sample: int | None = None, *, seed: int = 0, threads: int = 8
) -> list[DatasetStats]:
    """Check every row and every image (or ``sample`` images per manifest); raise DataError
    listing every problem with its file and line. Every split streams (memory does not grow
    with the manifests): the eval splits first, so that the training images stream past them."""
    problems: list[str] = []
    evals = _EvalImages()
    total_weight = sum(d.mix_weight for d in spec.trained.values())
    parts = [_Split(n, "eval", ds.eval) for n, ds in spec.datasets.items()]
    parts += [_Split(n, "train", ds.train) for n, ds in spec.datasets.items() if ds.train]
    checked: dict[str, int] = {}
    for part in parts:
        n = _check_split(spec, part, sample, seed, threads, evals, problems)
        checked[part.name] = checked.get(part.name, 0) + n
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"{len(problems)} data problem(s):\n  {shown}{more}")
    counts = {(p.name, p.split): p.rows for p in parts}
    return [
        DatasetStats(
            name=name,
            kind=ds.kind,
            train=counts.get((name, "train"), 0),
            eval=counts[(name, "eval")],
            share=ds.mix_weight / total_weight,
            eval_subset=max(1, round(counts[(name, "eval")] * ds.eval_ratio)),
            images_checked=checked[name],
            leaked=evals.report(name, ds.eval),
        )
        for name, ds in spec.datasets.items()
    ]


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

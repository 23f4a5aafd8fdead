"""Three real image-classification datasets built offline from images that ship in packages.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (10 classes).
- ``textures``: crops of scikit-image's bundled photographs, one source image per class; train
  crops come from the left half of each image and test crops from the right half, so no pixel is
  shared between the splits.
- ``faces``: scikit-image's ``lfw_subset`` (100 faces, 100 non-faces, 25x25).

Deterministic for a seed. Each dataset is built in a temporary folder and renamed into place
with a COMPLETE marker, so a half-built dataset is never read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DEMO_DATASETS: tuple[str, ...] = ("digits", "textures", "faces")
TEXTURE_SOURCES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "chelsea", "coffee",
    "coins", "grass", "gravel", "hubble_deep_field", "rocket",
)  # fmt: skip
CROPS_PER_CLASS = {"train": 60, "test": 24}
SIZE = 32


@dataclass(frozen=True)
class DemoDataset:
    name: str
    train: Path
    test: Path
    labels: Path
    num_classes: int
    n_train: int
    n_test: int


@dataclass(frozen=True)
class Box:
    """A crop of a source image: left, top, side (pixels)."""

    left: int
    top: int
    side: int

    def intersects(self, other: Box) -> bool:
        return (
            self.left < other.left + other.side
            and other.left < self.left + self.side
            and self.top < other.top + other.side
            and other.top < self.top + self.side
        )


Split = dict[str, list[tuple[np.ndarray, int]]]  # split -> [(uint8 image, label)]


def build_demo(out_dir: Path, *, seed: int = 0, force: bool = False) -> list[DemoDataset]:
    out_dir = Path(out_dir).resolve()
    builders: dict[str, Callable[[int], tuple[Split, list[str]]]] = {
        "digits": _digits,
        "textures": lambda s: _textures(s)[:2],
        "faces": _faces,
    }
    built = [_build_one(out_dir, name, builders[name], seed, force) for name in DEMO_DATASETS]
    build_demo_vqa(out_dir, force=force)
    from workers.data.demo_bench import build_demo_bench

    build_demo_bench(out_dir, seed=seed, force=force)
    return built


# VQA twins of the classification sets: the same images, a question and a one-word answer from
# the tiny model's vocabulary. Each sample also carries a low-quality first turn (relevance 1)
# that jobs/demo_vqa.toml filters out with min_ratings, as FineVision's ratings are used.
VQA_QUESTIONS = {
    "digits": "what digit is this ?",
    "textures": "what is in the picture ?",
    "faces": "is this a face ?",
}
VQA_ANSWERS = {"chelsea": "cat", "hubble_deep_field": "hubble", "face": "yes", "non_face": "no"}


def build_demo_vqa(out_dir: Path, *, force: bool = False) -> None:
    """``vqa_<name>/{train,test}.jsonl`` beside each classification set, image paths relative to
    the demo folder (resolved through the dataset's image_roots)."""
    for name in DEMO_DATASETS:
        final = out_dir / f"vqa_{name}"
        if (final / "COMPLETE").is_file() and not force:
            continue
        labels = json.loads((out_dir / name / "labels.json").read_text())
        tmp = out_dir / f".vqa_{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for split in ("train", "test"):
            lines = []
            for line in (out_dir / name / f"{split}.jsonl").read_text().splitlines():
                row = json.loads(line)
                answer = labels[row["label"]]
                turns = [
                    {"user": "what is in the image ?", "assistant": "a picture", "relevance": 1},
                    {
                        "user": VQA_QUESTIONS[name],
                        "assistant": VQA_ANSWERS.get(answer, answer),
                        "relevance": 5,
                        "image_correspondence": 5,
                        "visual_dependency": 5,
                        "formatting": 5,
                    },
                ]
                image = Path(row["image_path"]).relative_to(out_dir)
                lines.append(
                    json.dumps(
                        {
                            "id": f"vqa_{row['id']}",
                            "dataset_name": f"vqa_{name}",
                            "images": [str(image)],
                            "texts": turns,
                        }
                    )
                )
            (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        (tmp / "COMPLETE").write_text("{}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        logger.info("built vqa_%s", name)


def _build_one(
    out_dir: Path, name: str, make: Callable[[int], tuple[Split, list[str]]], seed: int, force: bool
) -> DemoDataset:
    final = out_dir / name
    if (final / "COMPLETE").is_file() and not force:
        return _describe(final, name)
    splits, label_names = make(seed)
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for split, items in splits.items():
        (tmp / "images" / split).mkdir(parents=True)
        lines = []
        for i, (pixels, label) in enumerate(items):
            Image.fromarray(pixels).save(tmp / "images" / split / f"{i:05d}.png")
            lines.append(
                json.dumps(
                    {
                        "id": f"{name}/{split}/{i:05d}",
                        # Manifests name the final location, where the folder is renamed to.
                        "image_path": str(final / "images" / split / f"{i:05d}.png"),
                        "label": label,
                        "dataset_name": name,
                    }
                )
            )
        (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (tmp / "labels.json").write_text(json.dumps(label_names, indent=1))
    (tmp / "COMPLETE").write_text(json.dumps({"seed": seed}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    ds = _describe(final, name)
    logger.info(
        "built %s: %d train, %d test, %d classes", name, ds.n_train, ds.n_test, ds.num_classes
    )
    return ds


def _describe(folder: Path, name: str) -> DemoDataset:
    def count(p: Path) -> int:
        return sum(1 for line in p.open() if line.strip())

    labels = json.loads((folder / "labels.json").read_text())
    return DemoDataset(
        name=name,
        train=folder / "train.jsonl",
        test=folder / "test.jsonl",
        labels=folder / "labels.json",
        num_classes=len(labels),
        n_train=count(folder / "train.jsonl"),
        n_test=count(folder / "test.jsonl"),
    )


def _stratified(labels: np.ndarray, test_share: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a seeded stratified split: the same share of every class goes to test."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        k = round(len(idx) * test_share)
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(test)


def _digits(seed: int) -> tuple[Split, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 0..16 grey levels to 0..255, upscaled 4x (nearest) so the files are viewable.
    images = (d.images * (255 / 16)).round().astype(np.uint8).repeat(4, 1).repeat(4, 2)
    train, test = _stratified(d.target, 0.3, seed)
    splits = {
        s: [(images[i], int(d.target[i])) for i in idx]
        for s, idx in (("train", train), ("test", test))
    }
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return splits, names


def _textures(seed: int) -> tuple[Split, list[str], dict[str, list[tuple[int, Box]]]]:
    """Random square crops: train from the left half of each source, test from the right."""
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    splits: Split = {"train": [], "test": []}
    boxes: dict[str, list[tuple[int, Box]]] = {"train": [], "test": []}
    for label, source in enumerate(TEXTURE_SOURCES):
        img = np.asarray(getattr(skdata, source)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(
                np.uint8
            )
        h, w = img.shape[:2]
        side = min(h, w // 2) // 3
        halves = {"train": (0, w // 2 - side), "test": (w // 2, w - side)}
        for split, (lo, hi) in halves.items():
            for _ in range(CROPS_PER_CLASS[split]):
                box = Box(int(rng.integers(lo, hi + 1)), int(rng.integers(0, h - side + 1)), side)
                crop = img[box.top : box.top + side, box.left : box.left + side]
                pixels = np.asarray(
                    Image.fromarray(crop).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                )
                splits[split].append((pixels, label))
                boxes[split].append((label, box))
    return splits, list(TEXTURE_SOURCES), boxes


def texture_crop_boxes(seed: int = 0) -> dict[str, list[tuple[int, Box]]]:
    """The crop boxes of the textures dataset, by split (for checking that splits are disjoint)."""
    return _textures(seed)[2]


def _faces(seed: int) -> tuple[Split, list[str]]:
    from skimage import data as skdata

    images = (np.asarray(skdata.lfw_subset()) * 255).round().astype(np.uint8)
    labels = np.array([1] * 100 + [0] * 100)  # lfw_subset: the first 100 are faces
    train, test = _stratified(labels, 0.3, seed)
    splits = {
        s: [(images[i], int(labels[i])) for i in idx]
        for s, idx in (("train", train), ("test", test))
    }
    return splits, ["non_face", "face"]

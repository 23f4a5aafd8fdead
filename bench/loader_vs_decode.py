"""Images/s through the full training loader vs PIL's decode-only rate on the same JPEGs.

The JPEGs are 640x480 crops of scikit-image's bundled photographs (real images, no download),
written at quality 90. Baseline: one process decoding each file to RGB with PIL, nothing else.
Loader: the real training path (``make_loader`` with one DataLoader worker: plan, decode, resize
to the model's 56x56 input, Qwen's image processor, tokenisation, batching of 32), consumed by
the main process. Both on one core each. Prints name=value lines; the ratio is the figure.

    PYTHONPATH=. .venv/bin/python bench/loader_vs_decode.py [--quick]

``--quick``: 128 images (4 batches) instead of 512, to check the benchmark end to end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 512
BATCH = 32


def write_jpegs(folder: Path, n_images: int) -> list[Path]:
    from skimage import data

    sources = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.hubble_deep_field(),
    ]
    bigs = [np.array(Image.fromarray(src).resize((1280, 960))) for src in sources]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_images):
        big = bigs[i % len(bigs)]
        top, left = rng.integers(0, 960 - 480), rng.integers(0, 1280 - 640)
        crop = big[top : top + 480, left : left + 640]
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(crop).save(path, quality=90)
        paths.append(path)
    return paths


def decode_only(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB")
    return len(paths) / (time.perf_counter() - t0)


def full_decode_rate(paths: list[Path], model: Path) -> float:
    """The same encoding in-process, with the early shrink turned off (full-size decode, then
    the processor's resize): what the loader would cost without it."""
    from workers.data.encode import ClassificationEncoder
    from workers.data.manifest import Sample

    encoder = ClassificationEncoder(model, "what is in the image ?", 3136, 3136)
    encoder.decode_size = None
    samples = [Sample(str(i), p, i % 5, "photos") for i, p in enumerate(paths)]
    t0 = time.perf_counter()
    for start in range(0, len(samples), BATCH):
        encoder.encode(samples[start : start + BATCH], {"photos": 5})
    return len(samples) / (time.perf_counter() - t0)


def loader_rate(paths: list[Path], folder: Path, model: Path) -> float:
    n_images = len(paths)
    from orchestrator.contract.spec import validate_spec
    from workers.data.loader import Plan, make_loader
    from workers.data.microbatch import Batcher, load_train_data

    manifest = folder / "train.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {"id": str(i), "image_path": str(p), "label": i % 5, "dataset_name": "photos"}
            )
            + "\n"
            for i, p in enumerate(paths)
        )
    )
    spec = validate_spec(
        {
            "name": "bench",
            "model": {"path": str(model), "min_pixels": 3136, "max_pixels": 3136},
            "datasets": {
                "photos": {"train": str(manifest), "eval": str(manifest), "num_classes": 5}
            },
            "training": {"max_steps": n_images // BATCH, "batch_size": BATCH, "num_workers": 1},
        }
    )
    data = load_train_data(spec)
    plan = Plan(
        sizes={"photos": n_images},
        weights={"photos": 1.0},
        seed=0,
        start_step=0,
        max_steps=n_images // BATCH,
        grad_accum=1,
        global_micro=BATCH,
        rank=0,
        world=1,
    )
    loader = iter(make_loader(plan, Batcher(spec, data), workers=1, prefetch=4))
    first = next(loader)  # worker start-up and encoder loading are not throughput
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        n += len(batch.ids)
    rate = n / (time.perf_counter() - t0)
    if not first.ids or n == 0:
        raise SystemExit("the loader yielded no classification samples")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=N_IMAGES)
    ap.add_argument("--quick", action="store_true", help="128 images (4 batches)")
    args = ap.parse_args()
    n_images = 4 * BATCH if args.quick else args.images
    if n_images < 2 * BATCH:
        raise SystemExit(f"--images must be at least {2 * BATCH} (the first batch is not timed)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    model = ROOT / "models" / "tiny-qwen2.5-vl"
    if not (model / "config.json").is_file():
        from workers.models.tiny import build_tiny_qwen2_5_vl

        model = build_tiny_qwen2_5_vl(Path(tempfile.mkdtemp()) / "tiny")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_jpegs(folder, n_images)
        decode_only(paths[:32])  # warm the page cache
        decode = decode_only(paths)
        loader = loader_rate(paths, folder, model)
        plain = full_decode_rate(paths, model)
    print(f"loader_images={n_images}")
    print(f"decode_images_per_s={decode:.1f}")
    print(f"loader_images_per_s={loader:.1f}")
    print(f"loader_vs_decode={loader / decode:.3f}")
    print(f"encode_without_early_shrink_images_per_s={plain:.1f}")
    print(f"encode_without_early_shrink_vs_decode={plain / decode:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

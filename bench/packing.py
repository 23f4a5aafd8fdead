"""Packing fill: orch's streaming packer against a faithful port of nanoVLM's, on one stream.

The stream: 100,000 samples with FineVision-like lengths, seeded. Text tokens are log-normal
(median 150, sigma 1.0, at least 8); each sample has 1-4 images of 64-1024 tokens (multiples of
64, uniform). Packs hold 4096 tokens and at most 18 images. Samples longer than 4096 tokens fit no
pack: they are counted (`packing_oversize_excluded`) and left out of the stream given to both
packers (nanoVLM would skip them silently; orch would raise). nanoVLM's buffer is its training
default, num_of_sequences = batch_size * 4 with batch_size 8 (32 sequences, 131k tokens);
orch's buffer holds 512 samples (about 816k tokens). For a like-for-like reading, orch is also
run with a buffer of the same token budget as nanoVLM's (82 samples of the mean length):
`packing_fill_same_buffer`.

    PYTHONPATH=. .venv/bin/python bench/packing.py [--samples 100000] [--quick]

``--quick``: a stream of 5,000 samples (the same generator and packers), in about a second.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from workers.data.packing import fill_ratio, nanovlm_pack, pack_stream

N = 100_000
PACK = 4096
MAX_IMAGES = 18
ORCH_BUFFER = 512
NANOVLM_SEQUENCES = 8 * 4


def stream(n: int = N, seed: int = 0) -> tuple[list[tuple[int, int]], int]:
    rng = np.random.default_rng(seed)
    text = np.maximum(8, rng.lognormal(np.log(150), 1.0, n).astype(int))
    n_images = rng.integers(1, 5, n)
    out: list[tuple[int, int]] = []
    oversize = 0
    for t, k in zip(text.tolist(), n_images.tolist(), strict=True):
        tokens = t + int((rng.integers(1, 17, k) * 64).sum())
        if tokens > PACK:
            oversize += 1
            continue
        out.append((tokens, k))
    return out, oversize


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=N)
    ap.add_argument("--quick", action="store_true", help="5,000 samples")
    args = ap.parse_args()
    items, oversize = stream(5_000 if args.quick else args.samples)
    t0 = time.perf_counter()
    ours = list(pack_stream(items, PACK, MAX_IMAGES, buffer_size=ORCH_BUFFER))
    elapsed = time.perf_counter() - t0
    theirs = list(nanovlm_pack(items, PACK, NANOVLM_SEQUENCES, MAX_IMAGES, PACK + 1))
    mean_tokens = sum(t for t, _ in items) / len(items)
    same = round(NANOVLM_SEQUENCES * PACK / mean_tokens)
    small = list(pack_stream(items, PACK, MAX_IMAGES, buffer_size=same))
    seen = sorted(i for p in ours for i in p.indices)
    assert seen == list(range(len(items))), "orch's packer lost or repeated a sample"
    fill, base = fill_ratio(ours, PACK), fill_ratio(theirs, PACK)
    print(f"packing_samples={len(items)}")
    print(f"packing_oversize_excluded={oversize}")
    print(f"packing_mean_sample_tokens={mean_tokens:.0f}")
    print(f"packing_buffer_samples_orch={ORCH_BUFFER}")
    print(f"packing_buffer_tokens_nanovlm={NANOVLM_SEQUENCES * PACK}")
    print(f"packing_fill={fill:.4f}")
    print(f"packing_fill_nanovlm={base:.4f}")
    print(f"packing_fill_gain_points={100 * (fill - base):.2f}")
    print(f"packing_fill_same_buffer={fill_ratio(small, PACK):.4f}")
    print(f"packing_images_per_pack={sum(p.images for p in ours) / len(ours):.2f}")
    print(f"packing_samples_per_s={len(items) / elapsed:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

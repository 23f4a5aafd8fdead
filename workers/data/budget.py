"""A VQA sample's token and image count as training will see it, without decoding a pixel.

`orch validate` and the pre-flight of `orch submit` check every VQA / multiple-choice row against
``training.pack_max_tokens`` and ``pack_max_images`` before any compute: a sample that cannot fit
a pack would otherwise stop training at its first batch. The count is exact: the chat template is
rendered and tokenised as ``VQAEncoder.encode`` does, and each image's token count follows the
same resizing (the early shrink of ``load_rgb``, ``dynamic_resize``, the tiles), computed on
sizes read from the image headers. ``tests/test_budget.py`` checks it against ``encode``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from workers.data.vqa import ImageConfig, VQAEncoder, VQASample


def loaded_size(path: Path, max_side: int) -> tuple[int, int]:
    """The size ``load_rgb(path, (max_side, max_side))`` returns: JPEG draft scaling, then an
    integer box reduction (PIL rounds the reduced size up)."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))
        w, h = im.size
    factor = min(w // max_side, h // max_side)
    if factor >= 2:
        w, h = -(-w // factor), -(-h // factor)
    return w, h


def resized_size(
    w: int, h: int, max_side: int, multiple: int, min_side: int = 0
) -> tuple[int, int]:
    """``dynamic_resize``'s output size for a (w, h) image."""
    scale = max(1.0, min_side / min(w, h))
    scale = min(scale, max_side / max(w, h))
    cap = max(multiple, max_side // multiple * multiple)
    nw = min(cap, max(multiple, round(w * scale / multiple) * multiple))
    nh = min(cap, max(multiple, round(h * scale / multiple) * multiple))
    return nw, nh


def view_sizes(path: Path, cfg: ImageConfig, multiple: int) -> list[tuple[int, int]]:
    """The sizes of the views ``VQAEncoder.images`` makes of one image (one, or a global view
    and the tiles)."""
    w, h = loaded_size(path, cfg.max_side)
    if cfg.tile_size is None:
        return [resized_size(w, h, cfg.max_side, multiple, cfg.min_side)]
    w, h = resized_size(w, h, cfg.max_side, multiple, cfg.min_side)
    tile = cfg.tile_size
    cols, rows = max(1, round(w / tile)), max(1, round(h / tile))
    while cols * rows > cfg.max_tiles:
        if cols >= rows:
            cols -= 1
        else:
            rows -= 1
    n_views = 1 if cols * rows == 1 else 1 + cols * rows
    return [resized_size(tile, tile, cfg.max_side, multiple)] * n_views


def sample_budget(encoder: VQAEncoder, sample: VQASample, cfg: ImageConfig) -> tuple[int, int]:
    """(tokens, images) of the sample's training encoding."""
    return BudgetCounter(encoder)(sample, cfg)


class BudgetCounter:
    """``sample_budget`` over many rows: an image's header is read once however many rows use
    it, and rows with the same texts and image sizes (a benchmark asks the same question of many
    images) are tokenised once."""

    def __init__(self, encoder: VQAEncoder) -> None:
        self.encoder = encoder
        self._views: dict[tuple[Path, ImageConfig], list[tuple[int, int]]] = {}
        self._tokens: dict[tuple[object, ...], int] = {}

    def views(self, path: Path, cfg: ImageConfig) -> list[tuple[int, int]]:
        key = (path, cfg)
        if key not in self._views:
            self._views[key] = view_sizes(path, cfg, self.encoder.multiple)
        return self._views[key]

    def __call__(self, sample: VQASample, cfg: ImageConfig) -> tuple[int, int]:
        enc = self.encoder
        sizes = [s for p in sample.images for s in self.views(p, cfg)]
        key = (tuple((t.user, t.assistant, t.layout) for t in sample.turns), tuple(sizes))
        if key not in self._tokens:
            patch = enc.multiple // enc.merge
            grid = torch.tensor([[1, h // patch, w // patch] for w, h in sizes], dtype=torch.long)
            ids, _ = enc._tokens(enc._pieces(sample.turns, len(sizes)), grid.reshape(-1, 3))
            self._tokens[key] = len(ids)
        return self._tokens[key], len(sizes)

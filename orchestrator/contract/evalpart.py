"""The description of one eval part, light enough for the controller to import (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalJob:
    """Everything one eval part needs; JSON-serialisable so any backend can carry it."""

    step: int
    dataset: str
    checkpoint: str  # the checkpoint's hf/ directory
    manifest: str
    num_classes: int
    eval_ratio: float  # 1.0 for a full eval
    partial: bool
    seed: int
    batch_size: int
    prompt: str
    min_pixels: int
    max_pixels: int
    attn_implementation: str
    out: str
    backend: str = "local"
    attempt: int = 1
    kind: str = "classification"  # or "vqa": generate answers, exact match
    image_roots: list[str] = field(default_factory=list)
    min_ratings: dict[str, int] = field(default_factory=dict)
    max_image_side: int = 448
    min_image_side: int = 0
    tile_size: int | None = None
    max_tiles: int = 4
    max_new_tokens: int = 16

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

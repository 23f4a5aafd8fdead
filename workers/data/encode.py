"""Turn (image, prompt) pairs into Qwen-VL model inputs, with the model directory's own
tokenizer, chat template and image processor: the same path for the tiny model and a 7B.

Qwen's AutoProcessor needs torchvision (its video processor), which does not install beside our
torch; the image processor and tokenizer are used directly, and each ``<|image_pad|>`` is expanded
to grid_t*grid_h*grid_w / merge_size**2 tokens, exactly as the processor would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from workers.data.manifest import Sample

IMAGE_PAD = "<|image_pad|>"


@dataclass
class ClassificationBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor  # [4, B, L]: text positions, then the 3 mRoPE rows
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    labels: torch.Tensor
    num_classes: torch.Tensor
    datasets: list[str]
    ids: list[str]

    def model_inputs(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "position_ids": self.position_ids.to(device),
            "pixel_values": self.pixel_values.to(device, dtype),
            "image_grid_thw": self.image_grid_thw.to(device),
        }


class ClassificationEncoder:
    def __init__(self, model_dir: Path, prompt: str, min_pixels: int, max_pixels: int) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(
            str(model_dir), local_files_only=True
        )
        self.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        side = math.ceil(math.sqrt(max_pixels))
        self.decode_size = (side, side)  # never decode JPEGs smaller than the largest target
        self.merge = int(self.image_processor.merge_size)
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        self.template = str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        if self.template.count(IMAGE_PAD) != 1:
            raise ValueError(
                f"{model_dir}: chat template must render one {IMAGE_PAD} per image; got "
                f"{self.template!r}"
            )
        image_token = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        assert isinstance(image_token, int)
        self.image_token_id = image_token
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    def encode(self, samples: Sequence[Sample], num_classes: dict[str, int]) -> ClassificationBatch:
        images = [load_rgb(s.image_path, self.decode_size) for s in samples]
        vision = self.image_processor(images=images, size=self.size, return_tensors="pt")
        grid = vision["image_grid_thw"]
        rows: list[list[int]] = []
        for thw in grid.tolist():
            n_tokens = thw[0] * thw[1] * thw[2] // self.merge**2
            text = self.template.replace(IMAGE_PAD, IMAGE_PAD * n_tokens)
            rows.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        # mRoPE positions here, in the loader, as for packed VQA: the model's own per-sample
        # loop costs device syncs every step. The padded tail gets 1, as the model gives it.
        positions = torch.ones((4, len(rows), width), dtype=torch.long)
        positions[0] = torch.arange(width)
        for i, r in enumerate(rows):  # right padding: pooling and positions ignore the tail
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
            positions[1:, i, : len(r)] = mrope_positions(
                input_ids[i, : len(r)], grid[i : i + 1], self.image_token_id, self.merge
            )
        return ClassificationBatch(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            pixel_values=vision["pixel_values"],
            image_grid_thw=grid,
            labels=torch.tensor([s.label for s in samples], dtype=torch.long),
            num_classes=torch.tensor([num_classes[s.dataset] for s in samples], dtype=torch.long),
            datasets=[s.dataset for s in samples],
            ids=[s.id for s in samples],
        )


def mrope_positions(
    input_ids: torch.Tensor, grid: torch.Tensor, image_token_id: int, merge: int
) -> torch.Tensor:
    """[3, L] mRoPE ids of one unpadded sample with still images: transformers' Qwen2/2.5-VL
    ``get_rope_index``, restated so DataLoader workers can compute it without the model."""
    is_image = (input_ids == image_token_id).tolist()
    out = torch.empty(3, len(is_image), dtype=torch.long)
    grids = iter(grid.tolist())
    pos, i, n = 0, 0, len(is_image)
    while i < n:
        j = i
        while j < n and is_image[j] == is_image[i]:
            j += 1
        if not is_image[i]:
            out[:, i:j] = torch.arange(pos, pos + j - i)
            pos += j - i
        else:
            _, gh, gw = next(grids)
            h, w = gh // merge, gw // merge
            if h * w != j - i:
                raise ValueError(f"image token run of {j - i} does not match grid {gh}x{gw}")
            hh = torch.arange(h).repeat_interleave(w)
            ww = torch.arange(w).repeat(h)
            out[0, i:j] = pos
            out[1, i:j] = pos + hh
            out[2, i:j] = pos + ww
            pos += max(h, w)
        i = j
    return out


def load_rgb(path: Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode as RGB. With ``min_size`` (the largest size the model input can need), a large
    image is shrunk early, never below ``min_size``: a JPEG is decoded by libjpeg's DCT scaling
    at the smallest power-of-two reduction (``Image.draft``), any other format is box-reduced by
    an integer factor (what PIL's own ``reducing_gap`` does). The resize that follows then sees
    at least the pixels it needs, at a fraction of the cost of shrinking a full-size photo."""
    with Image.open(path) as im:
        if min_size is not None and im.format == "JPEG":
            im.draft("RGB", min_size)
        rgb = im.convert("RGB")
    if min_size is not None:
        factor = min(rgb.width // min_size[0], rgb.height // min_size[1])
        if factor >= 2:
            rgb = rgb.reduce(factor)
    return rgb

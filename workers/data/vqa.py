"""VQA / instruction samples: reading, quality filters, images, chat template, labels, packing.

A sample is a list of images plus user/assistant turns (FineVision's shape, with its optional
per-turn quality ratings). Encoding goes through the model directory's own tokenizer, chat template
and image processor, so the tiny model and a 7B take the same path:

- the conversation is rendered with the chat template, turn by turn, so the text of every
  assistant answer is known exactly; labels are -100 everywhere except those answers;
- images are resized keeping the aspect ratio, the long side capped and both sides multiples of
  the patch size times the merge size (then the image processor does not resize again), and
  optionally split into tiles plus one global view;
- each ``<|image_pad|>`` is expanded to the image's token count, as Qwen's processor would.

Packing puts several samples into one row without changing the math: every token attends only
to earlier tokens of its own sample (an explicit block-diagonal causal mask for sdpa/eager; for
FlashAttention the per-sample text positions let transformers use varlen kernels), and every
sample gets the 3-D mRoPE position ids it would have alone (`mrope_positions`, checked against
transformers' own ``get_rope_index`` in the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from orchestrator.contract.errors import DataError
from workers.data.encode import IMAGE_PAD, load_rgb, mrope_positions
from workers.data.manifest import Malformed, checked_list, iter_rows, manifest_path

logger = logging.getLogger(__name__)

RATING_KEYS = ("relevance", "image_correspondence", "visual_dependency", "formatting")
IGNORE = -100


@dataclass(frozen=True)
class Turn:
    user: str
    assistant: str
    ratings: dict[str, int] = field(default_factory=dict)
    layout: tuple[str | None, ...] | None = None
    """The first turn's user message as text pieces and image slots (None) in order, for a prompt
    that places its images inside the text (MMMU's ``<image k>``, workers/data/mcq.py); the slots
    take the sample's images in order. None: every image first, then ``user``."""


@dataclass(frozen=True)
class VQASample:
    id: str
    dataset: str
    images: tuple[Path, ...]
    turns: tuple[Turn, ...]
    line: int = 0  # line (JSONL) or row (Parquet) in its manifest, for messages
    references: tuple[str, ...] = ()
    """Every gold answer (TextVQA's ten annotators); none: the last turn's answer alone."""
    category: str | None = None  # a benchmark's question type (OCRBench, MME, ChartQA)
    group: str | None = None  # samples scored together (MME: the two questions of an image)

    @property
    def gold(self) -> list[str]:
        """The references the metrics score against."""
        return list(self.references) or [self.turns[-1].assistant]


@dataclass
class FilterCounts:
    """What the quality filter removed: reported by validate and logged by training."""

    turns_kept: int = 0
    turns_dropped: int = 0
    samples_dropped: int = 0


# --------------------------------------------------------------------------- reading


def resolve_image(raw: str, manifest: Path, roots: Sequence[Path]) -> Path | None:
    """An absolute path as is; a relative one against the manifest's folder, then each root."""
    p = Path(raw)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (manifest.parent, *roots):
        candidate = base / p
        if candidate.is_file():
            return candidate.resolve()
    return None


def resolve_images(
    images: Sequence[str], where: str, manifest: Path, roots: Sequence[Path], problems: list[str]
) -> list[Path]:
    """Every image of a row found (``resolve_image``); each one that is not becomes a problem
    naming where it was looked for."""
    resolved: list[Path] = []
    for raw in images:
        path = resolve_image(raw, manifest, roots)
        if path is None:
            tried = ", ".join(str(b) for b in (manifest.parent, *roots))
            problems.append(f"{where}: image {raw!r} not found (looked in: {tried})")
        else:
            resolved.append(path)
    return resolved


def parse_turns(texts: Any, where: str, problems: list[str]) -> list[Turn]:
    """A row's ``texts``: {user, assistant} turns with optional 1-5 ratings; each malformed one
    becomes a problem."""
    turns: list[Turn] = []
    if not isinstance(texts, list) or not texts:
        problems.append(f"{where}: texts must be a non-empty list of {{user, assistant}} turns")
        return turns
    for k, t in enumerate(texts):
        if not isinstance(t, dict) or not isinstance(t.get("user"), str):
            problems.append(f"{where}: texts[{k}].user must be a string")
            continue
        if not isinstance(t.get("assistant"), str) or not t["assistant"].strip():
            problems.append(f"{where}: texts[{k}].assistant must be a non-empty string")
            continue
        ratings: dict[str, int] = {}
        for key in RATING_KEYS:
            value = t.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                problems.append(f"{where}: texts[{k}].{key} must be an integer 1-5, got {value!r}")
                continue
            ratings[key] = value
        turns.append(Turn(t["user"], t["assistant"], ratings))
    return turns


def parse_vqa_row(
    row: Any, where: str, dataset: str, manifest: Path, roots: Sequence[Path]
) -> tuple[VQASample | None, list[str]]:
    """One row to a sample, or the list of its problems (each prefixed with ``where``)."""
    if not isinstance(row, dict):
        return None, [f"{where}: expected a JSON object"]
    missing = [k for k in ("id", "dataset_name", "images", "texts") if k not in row]
    if missing:
        return None, [f"{where}: missing field(s) {', '.join(missing)}"]
    problems: list[str] = []
    if row["dataset_name"] != dataset:
        problems.append(
            f"{where}: dataset_name {row['dataset_name']!r} but the manifest is configured as "
            f"datasets.{dataset}"
        )
    images = row["images"]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        problems.append(f"{where}: images must be a non-empty list of paths")
        images = []
    resolved = resolve_images(images, where, manifest, roots, problems)
    turns = parse_turns(row["texts"], where, problems)
    if problems:
        return None, problems
    line = int(where.rsplit(":", 1)[1]) if where.rsplit(":", 1)[-1].isdigit() else 0
    references = row.get("references")
    if references is not None and (
        not isinstance(references, list)
        or not references
        or not all(isinstance(r, str) for r in references)
    ):
        return None, [f"{where}: references must be a non-empty list of strings"]
    extra = {k: row.get(k) for k in ("category", "group")}
    bad = [k for k, v in extra.items() if v is not None and not isinstance(v, str | int)]
    if bad:
        return None, [f"{where}: {', '.join(bad)} must be a string"]
    return VQASample(
        str(row["id"]),
        dataset,
        tuple(resolved),
        tuple(turns),
        line,
        tuple(references or ()),
        None if extra["category"] is None else str(extra["category"]),
        None if extra["group"] is None else str(extra["group"]),
    ), []


def filter_turns(sample: VQASample, min_ratings: dict[str, int], counts: FilterCounts) -> bool:
    """Apply the configured minimum ratings; False when no turn is left (the sample goes)."""
    kept = tuple(
        t for t in sample.turns if all(t.ratings.get(k, v) >= v for k, v in min_ratings.items())
    )
    counts.turns_kept += len(kept)
    counts.turns_dropped += len(sample.turns) - len(kept)
    if not kept:
        counts.samples_dropped += 1
        return False
    object.__setattr__(sample, "turns", kept)
    return True


def iter_vqa_manifest(
    path: Path,
    dataset: str,
    problems: list[str],
    counts: FilterCounts,
    image_roots: Sequence[Path] = (),
    min_ratings: dict[str, int] | None = None,
) -> Iterator[VQASample]:
    """The checked and filtered samples of one VQA manifest, streamed; each bad row's problems
    are appended to ``problems`` and what the quality filter removed is added to ``counts``
    (logged at the end). Ids are checked by the caller (``checked_list``, the index)."""
    manifest_path(path, dataset)
    n = 0
    for lineno, row in iter_rows(path):
        where = f"{path}:{lineno}"
        if isinstance(row, Malformed):
            problems.append(f"{where}: {row.message}")
            continue
        sample, errs = parse_vqa_row(row, where, dataset, path, image_roots)
        if sample is None:
            problems.extend(errs)
            continue
        if filter_turns(sample, min_ratings or {}, counts):
            n += 1
            yield sample
    if counts.turns_dropped:
        logger.info(
            "%s: quality filter %s dropped %d of %d turns (%d samples left without a turn)",
            dataset,
            min_ratings,
            counts.turns_dropped,
            counts.turns_dropped + counts.turns_kept,
            counts.samples_dropped,
        )
    if not n and not problems:
        raise DataError(f"{path}: no samples left (datasets.{dataset}; check min_ratings)")


def read_vqa_manifest(
    path: Path,
    dataset: str,
    image_roots: Sequence[Path] = (),
    min_ratings: dict[str, int] | None = None,
    *,
    max_errors: int = 20,
) -> tuple[list[VQASample], FilterCounts]:
    """Read, check and filter one VQA manifest; every problem is reported with file and line."""
    problems: list[str] = []
    counts = FilterCounts()
    rows = iter_vqa_manifest(path, dataset, problems, counts, image_roots, min_ratings)
    return checked_list(rows, problems, path, max_errors), counts


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageConfig:
    max_side: int = 448
    min_side: int = 0
    tile_size: int | None = None
    max_tiles: int = 4


def dynamic_resize(
    image: Image.Image, max_side: int, multiple: int, min_side: int = 0
) -> Image.Image:
    """Keep the aspect ratio; upscale so the short side reaches min_side, cap the long side at
    max_side (the cap wins); make both sides multiples of ``multiple`` (patch size x merge size),
    never below one multiple."""
    w, h = image.size
    scale = max(1.0, min_side / min(w, h))
    scale = min(scale, max_side / max(w, h))
    cap = max(multiple, max_side // multiple * multiple)
    nw = min(cap, max(multiple, round(w * scale / multiple) * multiple))
    nh = min(cap, max(multiple, round(h * scale / multiple) * multiple))
    if (nw, nh) == (w, h):
        return image
    return image.resize((nw, nh), Image.Resampling.BICUBIC)


def split_tiles(image: Image.Image, tile: int, max_tiles: int) -> list[Image.Image]:
    """One global view (tile x tile) then a grid of tile x tile crops, row-major (nanoVLM's
    global + split images). The grid keeps the aspect ratio within max_tiles tiles."""
    w, h = image.size
    cols = max(1, round(w / tile))
    rows = max(1, round(h / tile))
    while cols * rows > max_tiles:
        if cols >= rows:
            cols -= 1
        else:
            rows -= 1
    grid = image.resize((cols * tile, rows * tile), Image.Resampling.BICUBIC)
    views = [image.resize((tile, tile), Image.Resampling.BICUBIC)]
    if cols * rows == 1:
        return views  # the global view is the whole image
    for r in range(rows):
        for c in range(cols):
            views.append(grid.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
    return views


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedVQA:
    """One tokenised sample: ``labels`` is -100 except on assistant answers (not yet shifted)."""

    id: str
    dataset: str
    input_ids: torch.Tensor  # [L]
    labels: torch.Tensor  # [L]
    pixel_values: torch.Tensor  # [patches, dim]
    image_grid_thw: torch.Tensor  # [images, 3]
    target: str = ""  # the reference answer (prompt-only encodings, for evaluation)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def n_images(self) -> int:
        return int(self.image_grid_thw.shape[0])


def _user_content(turn: Turn, n_images: int) -> list[dict[str, Any]]:
    """A user message's content parts: its images, then its text; or its layout's text pieces
    and image slots, in order."""
    if turn.layout is None:
        return [*[{"type": "image"}] * n_images, {"type": "text", "text": turn.user}]
    slots = sum(part is None for part in turn.layout)
    if slots != n_images:
        raise ValueError(f"a turn's layout has {slots} image slot(s) for {n_images} image(s)")
    return [{"type": "image"} if p is None else {"type": "text", "text": p} for p in turn.layout]


class VQAEncoder:
    """Chat template, image processing and label masks from the model directory's own files."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(
            str(model_dir), local_files_only=True
        )
        self.merge = int(self.image_processor.merge_size)
        self.multiple = int(self.image_processor.patch_size) * self.merge
        token = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if not isinstance(token, int):
            raise ValueError(f"{model_dir}: the tokenizer has no {IMAGE_PAD} token")
        self.image_token_id = token
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    def images(self, paths: Sequence[Path], cfg: ImageConfig) -> list[Image.Image]:
        out: list[Image.Image] = []
        for p in paths:
            im = load_rgb(p, (cfg.max_side, cfg.max_side))
            if cfg.tile_size is not None:
                im = dynamic_resize(im, cfg.max_side, self.multiple, cfg.min_side)
                views = split_tiles(im, cfg.tile_size, cfg.max_tiles)
                out.extend(dynamic_resize(v, cfg.max_side, self.multiple) for v in views)
            else:
                out.append(dynamic_resize(im, cfg.max_side, self.multiple, cfg.min_side))
        return out

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        )

    def _pieces(self, turns: Sequence[Turn], n_images: int) -> list[tuple[str, bool]]:
        """The rendered conversation cut into (text, is_answer) pieces, in order."""
        messages: list[dict[str, Any]] = []
        pieces: list[tuple[str, bool]] = []
        done = ""
        for k, turn in enumerate(turns):
            content = _user_content(turn, n_images if k == 0 else 0)  # images go with turn 0
            messages.append({"role": "user", "content": content})
            prompt = self._render(messages, True)
            messages.append({"role": "assistant", "content": turn.assistant})
            full = self._render(messages, False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ValueError(
                    "the chat template does not render a conversation as a prefix of its "
                    "continuation; assistant answers cannot be located for the loss mask"
                )
            pieces.append((prompt[len(done) :], False))
            pieces.append((full[len(prompt) :], True))
            done = full
        return pieces

    def _tokens(
        self, pieces: list[tuple[str, bool]], grid: torch.Tensor
    ) -> tuple[list[int], list[int]]:
        counts = iter((t * h * w) // self.merge**2 for t, h, w in grid.tolist())
        ids: list[int] = []
        labels: list[int] = []
        for text, answer in pieces:
            while IMAGE_PAD in text and not answer:
                head, _, text = text.partition(IMAGE_PAD)
                ids += self.tokenizer(head, add_special_tokens=False)["input_ids"]
                ids += [self.image_token_id] * next(counts)
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            labels += [IGNORE] * (len(ids) - len(labels))
            ids += piece
            labels += piece if answer else [IGNORE] * len(piece)
        if next(counts, None) is not None:
            raise ValueError("more images than <|image_pad|> placeholders in the chat template")
        return ids, labels

    def _vision(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        if not images:  # a text-only sample (a multiple-choice row without an image)
            proc = self.image_processor
            dim = 3 * int(proc.temporal_patch_size) * int(proc.patch_size) ** 2
            return torch.zeros(0, dim), torch.zeros(0, 3, dtype=torch.long)
        largest = max(w * h for w, h in (im.size for im in images))
        size = {"shortest_edge": self.multiple**2, "longest_edge": max(largest, self.multiple**2)}
        out = self.image_processor(images=images, size=size, return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def encode(self, sample: VQASample, cfg: ImageConfig) -> EncodedVQA:
        """All turns, answers supervised (training)."""
        return self.encode_decoded(sample, self.images(sample.images, cfg))

    def encode_decoded(self, sample: VQASample, images: list[Image.Image]) -> EncodedVQA:
        """``encode`` with the sample's images given decoded and sized (sides multiples of
        ``multiple``) instead of read from its paths: an image made in memory."""
        pixels, grid = self._vision(images)
        ids, labels = self._tokens(self._pieces(sample.turns, len(images)), grid)
        return EncodedVQA(
            sample.id, sample.dataset, torch.tensor(ids), torch.tensor(labels), pixels, grid
        )

    def encode_prompt(self, sample: VQASample, cfg: ImageConfig) -> EncodedVQA:
        """Every turn but the last answer, ending with the generation prompt (evaluation)."""
        return self.encode_prompt_decoded(sample, self.images(sample.images, cfg))

    def encode_prompt_decoded(self, sample: VQASample, images: list[Image.Image]) -> EncodedVQA:
        """``encode_prompt`` with the sample's images given decoded and sized (an image that
        comes in memory: lmms-eval's ``doc_to_visual``)."""
        pixels, grid = self._vision(images)
        pieces = self._pieces(sample.turns, len(images))[:-1]
        ids, _ = self._tokens(pieces, grid)
        return EncodedVQA(
            sample.id,
            sample.dataset,
            torch.tensor(ids),
            torch.full((len(ids),), IGNORE),
            pixels,
            grid,
            target=sample.turns[-1].assistant,
        )


def before_last_answer(full: EncodedVQA, target: str) -> EncodedVQA:
    """The generation prompt of an encoded sample: its tokens before the last answer, as
    ``VQAEncoder.encode_prompt`` makes them, without processing the images a second time."""
    supervised = full.labels != IGNORE
    if not bool(supervised.any()):
        raise ValueError(f"sample {full.id!r} has no supervised answer token")
    start = int(supervised.nonzero()[-1, 0])
    while start > 0 and bool(supervised[start - 1]):
        start -= 1
    ids = full.input_ids[:start]
    return EncodedVQA(
        full.id, full.dataset, ids, torch.full_like(ids, IGNORE), full.pixel_values,
        full.image_grid_thw, target=target,
    )  # fmt: skip


# --------------------------------------------------------------------------- positions, packing


@dataclass
class PackedBatch:
    """VQA samples packed into rows. ``targets`` are next-token labels (already shifted within
    each sample, so no sample predicts the first token of the next); ``segments`` numbers the
    samples of the batch (-1 on padding) and drives the block-diagonal mask and per-sample loss."""

    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor  # [4, R, L]: text positions, then the 3 mRoPE rows
    segments: torch.Tensor  # [R, L]
    targets: torch.Tensor  # [R, L]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    ids: list[str]
    datasets: list[str]
    rows: list[list[int]]  # sample indices per row

    @property
    def n_samples(self) -> int:
        return len(self.ids)

    def fill_ratio(self) -> float:
        return float((self.segments >= 0).sum()) / float(self.segments.numel())

    def images_per_row(self) -> float:
        return float(self.image_grid_thw.shape[0]) / max(1, len(self.rows))

    def attention_mask(self, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor | None:
        """[R, 1, L, L] block-diagonal causal mask (bool for sdpa, additive for eager); None for
        FlashAttention, which finds the samples from the text position ids (varlen)."""
        if attn_implementation == "flash_attention_2":
            return None
        seg = self.segments
        length = seg.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        # Padding rows attend to themselves only, so no softmax row is empty (no NaN).
        eye = torch.eye(length, dtype=torch.bool)
        allowed = (same & causal) | eye
        mask = allowed[:, None]
        if attn_implementation == "eager":
            zero = torch.zeros((), dtype=dtype)
            return torch.where(mask, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype))
        return mask

    def model_inputs(
        self, device: torch.device, dtype: torch.dtype, attn_implementation: str
    ) -> dict[str, Any]:
        mask = self.attention_mask(attn_implementation, dtype)
        # A batch of text-only samples has no vision input (the vision tower cannot take none).
        images = self.image_grid_thw.shape[0] > 0
        return {
            "input_ids": self.input_ids.to(device),
            "position_ids": self.position_ids.to(device),
            "attention_mask": None if mask is None else mask.to(device),
            "pixel_values": self.pixel_values.to(device, dtype) if images else None,
            "image_grid_thw": self.image_grid_thw.to(device) if images else None,
        }


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """labels[t+1] at t, and -100 at the last token: the sample's own next-token targets."""
    out = torch.full_like(labels, IGNORE)
    out[:-1] = labels[1:]
    return out


def pack(
    samples: Sequence[EncodedVQA],
    rows: list[list[int]],
    image_token_id: int,
    merge: int,
    pad_id: int,
) -> PackedBatch:
    """Lay out ``rows`` (lists of sample indices, from the packer) as one padded batch."""
    width = max(sum(samples[i].n_tokens for i in row) for row in rows)
    r = len(rows)
    input_ids = torch.full((r, width), pad_id, dtype=torch.long)
    positions = torch.zeros((4, r, width), dtype=torch.long)
    segments = torch.full((r, width), -1, dtype=torch.long)
    targets = torch.full((r, width), IGNORE, dtype=torch.long)
    pixels: list[torch.Tensor] = []
    grids: list[torch.Tensor] = []
    for ri, row in enumerate(rows):
        at = 0
        for i in row:
            s = samples[i]
            n = s.n_tokens
            input_ids[ri, at : at + n] = s.input_ids
            positions[0, ri, at : at + n] = torch.arange(n)
            positions[1:, ri, at : at + n] = mrope_positions(
                s.input_ids, s.image_grid_thw, image_token_id, merge
            )
            segments[ri, at : at + n] = i
            targets[ri, at : at + n] = shifted_targets(s.labels)
            pixels.append(s.pixel_values)
            grids.append(s.image_grid_thw)
            at += n
    return PackedBatch(
        input_ids=input_ids,
        position_ids=positions,
        segments=segments,
        targets=targets,
        pixel_values=torch.cat(pixels),
        image_grid_thw=torch.cat(grids),
        ids=[s.id for s in samples],
        datasets=[s.dataset for s in samples],
        rows=rows,
    )


def best_fit_rows(
    lengths: Sequence[int], images: Sequence[int], max_tokens: int, max_images: int
) -> list[list[int]]:
    """Pack one micro-batch's samples into rows with orch's packer (workers/data/packing.py),
    the whole micro-batch as its buffer. A sample longer than max_tokens (or with more images
    than max_images) is an error naming it, never truncated."""
    from workers.data.packing import pack_stream

    packs = pack_stream(
        zip(lengths, images, strict=True), max_tokens, max_images, buffer_size=len(lengths)
    )
    return [sorted(p.indices) for p in packs]


def per_sample_loss(
    logits: torch.Tensor, targets: torch.Tensor, segments: torch.Tensor, n_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss of each sample over its answer tokens, and whether every answer token
    was predicted (teacher-forced exact match). ``logits`` [N, V] are at the N supervised
    positions (targets != -100, row-major)."""
    sel = targets != IGNORE
    tgt = targets[sel]
    seg = segments[sel]
    tok = torch.nn.functional.cross_entropy(logits.float(), tgt, reduction="none")
    sums = torch.zeros(n_samples, dtype=tok.dtype, device=tok.device).index_add(0, seg, tok)
    counts = torch.zeros(n_samples, dtype=tok.dtype, device=tok.device).index_add(
        0, seg, torch.ones_like(tok)
    )
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"samples {empty} have no supervised answer token")
    wrong = torch.zeros(n_samples, dtype=tok.dtype, device=tok.device).index_add(
        0, seg, (logits.argmax(-1) != tgt).to(tok.dtype)
    )
    return sums / counts, wrong == 0


def answer_losses(
    model: Any, encoder: VQAEncoder, encoded: Sequence[EncodedVQA], device: torch.device
) -> tuple[torch.Tensor, PackedBatch]:
    """Each sample's mean loss over its answer tokens, teacher-forced, the samples packed one
    per row into one batch (and that batch, on the CPU)."""
    packed = pack(
        encoded,
        [[i] for i in range(len(encoded))],
        encoder.image_token_id,
        encoder.merge,
        encoder.pad_id,
    )
    attn = str(model.hf_config._attn_implementation)
    dtype = next(model.parameters()).dtype
    targets, segments = packed.targets.to(device), packed.segments.to(device)
    logits = model(**packed.model_inputs(device, dtype, attn), targets=targets)
    loss, _ = per_sample_loss(logits, targets, segments, len(encoded))
    return loss, packed

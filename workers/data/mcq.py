"""Multiple-choice rows: reading and checking, the prompts lmms-eval 0.7.3 builds for them, and
the one-turn VQA samples they train and are scored as.

A row is ``{"id", "dataset_name", "images": [0..n paths], "question", "hint"?, "options": [2..10
texts, letters A.. in order], "answer": "A".."J", "category"?, "group"?, "text"?}`` (``hint``,
``category``, ``group`` and ``text``, the question as its source phrases it, may be null or
absent). ``<image k>`` in the question, hint or
options is the row's k-th image (``images[k-1]``).

Each prompt mirrors one lmms-eval function (the lmms-eval 0.7.3 wheel, as its tasks build them
for the Qwen-VL models), cited in its docstring; the exact texts are tested
(tests/test_mcq.py, expected strings produced by lmms-eval's own functions). A prompt is the
user message; the answer letter is the assistant message, so an MCQ row goes through the VQA
encoder, packing and answer-only loss (workers/data/vqa.py) unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from orchestrator.contract.errors import DataError
from workers.data.manifest import Malformed, checked_list, iter_rows, manifest_path
from workers.data.vqa import (
    IGNORE,
    EncodedVQA,
    ImageConfig,
    PackedBatch,
    Turn,
    VQAEncoder,
    VQASample,
    answer_losses,
    before_last_answer,
    resolve_images,
)

LETTERS = "ABCDEFGHIJ"
MARKER = re.compile(r"<image (\d+)>")
POST_PROMPT = "Answer with the option's letter from the given choices directly."
"""The instruction lmms-eval's MMBench (en), MMMU (mmmu_val) and ScienceQA tasks end with."""
MMBENCH_OPTIONS_HEADER = "There are several options:"
"""tasks/mmbench/mmbench.yaml metadata.sys_prompt (MMBench_Evaluator's options header)."""
REQUIRED = ("id", "dataset_name", "images", "question", "options", "answer")


@dataclass(frozen=True)
class MCQRow:
    id: str
    dataset: str
    images: tuple[Path, ...]
    question: str
    hint: str | None
    options: tuple[str, ...]
    answer: str  # a letter among ``letters``
    category: str | None = None
    group: str | None = None
    line: int = 0  # line (JSONL) or row (Parquet) in its manifest, for messages
    text: str | None = None  # the question as its source phrases it, options inline (MMStar)

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]


# --------------------------------------------------------------------------- reading


def _check_options(
    options: Any, answer: Any, at: str, max_options: int, limit_reason: str, problems: list[str]
) -> list[str]:
    """2 to 10 non-empty option strings (at most ``max_options``) and an answer letter among
    theirs; the options, [] when they are not a list of strings."""
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        problems.append(f"{at}: options must be a list of non-empty strings")
        return []
    if not 2 <= len(options) <= len(LETTERS):
        problems.append(f"{at}: {len(options)} option(s); a multiple-choice row has 2 to 10")
    elif len(options) > max_options:
        problems.append(f"{at}: {len(options)} options; {limit_reason}")
    letters = LETTERS[: len(options)]
    if not isinstance(answer, str) or len(answer) != 1 or answer not in letters:
        problems.append(f"{at}: answer {answer!r} is not one of the option letters {letters}")
    return options


def _check_markers(texts: list[str], images: int, at: str, problems: list[str]) -> None:
    """``<image k>`` markers count from 1 and name images the row has."""
    markers = sorted({int(k) for t in texts for k in MARKER.findall(t)})
    if markers and markers[0] < 1:
        problems.append(f"{at}: <image {markers[0]}>: image markers count from 1")
    if markers and markers[-1] > images:
        problems.append(
            f"{at}: the text refers to <image {markers[-1]}> but the row has {images} image(s)"
        )


def parse_mcq_row(
    row: Any,
    where: str,
    dataset: str,
    manifest: Path,
    roots: Sequence[Path],
    max_options: int = len(LETTERS),
    limit_reason: str = "",
) -> tuple[MCQRow | None, list[str]]:
    """One row to an MCQRow, or the list of its problems (each prefixed with ``where`` and the
    row's id)."""
    if not isinstance(row, dict):
        return None, [f"{where}: expected a JSON object"]
    rid = row.get("id")
    at = f"{where} (id {rid!r})" if isinstance(rid, str | int) else f"{where} (no id)"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return None, [f"{at}: missing field(s) {', '.join(missing)}"]
    problems: list[str] = []
    if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
        problems.append(f"{at}: id must be a non-empty string")
    if row["dataset_name"] != dataset:
        problems.append(
            f"{at}: dataset_name {row['dataset_name']!r} but the manifest is configured as "
            f"datasets.{dataset}"
        )
    question, hint, options = row["question"], row.get("hint"), row["options"]
    if not isinstance(question, str) or not question.strip():
        problems.append(f"{at}: question must be a non-empty string")
        question = ""
    for key in ("hint", "category", "group", "text"):
        if row.get(key) is not None and not isinstance(row[key], str):
            problems.append(f"{at}: {key} must be a string or null, got {row[key]!r}")
    if not isinstance(hint, str):
        hint = None
    options = _check_options(options, row["answer"], at, max_options, limit_reason, problems)
    answer = row["answer"]
    images = row["images"]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        problems.append(f"{at}: images must be a list of paths (possibly empty)")
        images = []
    resolved = resolve_images(images, at, manifest, roots, problems)
    _check_markers([question, hint or "", *options], len(images), at, problems)
    if problems:
        return None, problems
    line = int(where.rsplit(":", 1)[1]) if where.rsplit(":", 1)[-1].isdigit() else 0
    return MCQRow(
        id=str(rid),
        dataset=dataset,
        images=tuple(resolved),
        question=question,
        hint=hint,
        options=tuple(options),
        answer=answer,
        category=row.get("category"),
        group=row.get("group"),
        line=line,
        text=row.get("text"),
    ), []


def iter_mcq_manifest(
    path: Path,
    dataset: str,
    problems: list[str],
    image_roots: Sequence[Path] = (),
    *,
    max_options: int = len(LETTERS),
    limit_reason: str = "",
) -> Iterator[MCQRow]:
    """The checked rows of one multiple-choice manifest, streamed; each bad row's problems (with
    its file, line and row id) are appended to ``problems``. ``max_options`` (with
    ``limit_reason``, shown in the message) is a tighter limit a scoring rule needs. Ids are
    checked by the caller (``checked_list``, the index)."""
    manifest_path(path, dataset)
    n = 0
    for lineno, raw in iter_rows(path):
        where = f"{path}:{lineno}"
        if isinstance(raw, Malformed):
            problems.append(f"{where}: {raw.message}")
            continue
        row, errs = parse_mcq_row(raw, where, dataset, path, image_roots, max_options, limit_reason)
        if row is None:
            problems.extend(errs)
            continue
        n += 1
        yield row
    if not n and not problems:
        raise DataError(f"{path}: no rows (datasets.{dataset})")


def read_mcq_manifest(
    path: Path,
    dataset: str,
    image_roots: Sequence[Path] = (),
    *,
    max_options: int = len(LETTERS),
    limit_reason: str = "",
    max_errors: int = 20,
) -> list[MCQRow]:
    """Read and check one multiple-choice manifest; every problem is reported in one
    DataError."""
    problems: list[str] = []
    rows = iter_mcq_manifest(
        path, dataset, problems, image_roots, max_options=max_options, limit_reason=limit_reason
    )
    return checked_list(rows, problems, path, max_errors)


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """The user message of a row: its text, the images the model sees (in order) and, for a
    prompt that places images inside the text, the layout (text pieces and None image slots)."""

    text: str
    images: tuple[Path, ...]
    layout: tuple[str | None, ...] | None = None


def mmbench_prompt(row: MCQRow) -> Prompt:
    """lmms-eval tasks/mmbench/en_utils.py ``mmbench_doc_to_text`` with the en template's
    post_prompt (tasks/mmbench/_default_template_mmbench_en_yaml): "{hint} {question} {options}"
    (no hint: "{question} {options}"; lmms-eval also reads the string "nan" as no hint), then
    "\\n" + "\\nAnswer with the option's letter ...". The options are
    tasks/mmbench/mmbench_evals.py ``MMBench_Evaluator.create_options_prompt``: the header
    "There are several options:" then "A. text" lines (an option reading "nan" left out, as
    there). Images first, then the text (api/task.py ``_auto_doc_to_messages``: the chat path
    of qwen2_5_vl / qwen3_vl)."""
    lines = [f"{k}. {o}" for k, o in zip(row.letters, row.options, strict=True) if o != "nan"]
    options = f"{MMBENCH_OPTIONS_HEADER}\n" + "".join(f"{line}\n" for line in lines)
    options = options.rstrip("\n")
    if row.hint is not None and row.hint != "nan":
        query = f"{row.hint} {row.question} {options}"
    else:
        query = f"{row.question} {options}"
    return Prompt(f"{query}\n\n{POST_PROMPT}", row.images)


def mmmu_prompt(row: MCQRow) -> Prompt:
    """lmms-eval tasks/mmmu/utils.py as mmmu_val builds a multiple-choice question for the chat
    models (qwen2_5_vl; lmms_eval_specific_kwargs "default"):

    - text: ``construct_prompt``: "{question}\\n{options}\\n\\n{multiple_choice_prompt}" with
      ``parse_options`` ("A. text" lines joined by "\\n"), then ``replace_images_tokens``
      ("<image 1>" .. "<image 7>" become "<image>"). MMMU has no hint: a row's hint is left out.
    - images: ``mmmu_doc_to_visual``: the images of the markers in the question and options,
      each once, sorted by "image_<k>" as strings; an image no marker names is not passed.
    - layout: ``mmmu_doc_to_messages``: the text split at "<image>"; for the i-th image, the
      i-th piece (stripped, left out when empty) then the image; then the last piece (stripped).
      As there, a marker repeated leaves pieces without an image and the text between its
      copies out, and images go to the placeholders in marker-number order, not text order.

    lmms-eval's qwen3_vl model gets another prompt (``mmmu_doc_to_text_qwen3vl``, its
    model-specific kwargs) and the simple qwen2_vl model keeps the markers as text with the
    images first; neither is this style."""
    options = "\n".join(f"{k}. {o}" for k, o in zip(row.letters, row.options, strict=True))
    prompt = f"{row.question}\n{options}\n\n{POST_PROMPT}"
    names = sorted({f"image_{k}" for k in MARKER.findall(prompt)})
    images = tuple(row.images[int(name.split("_")[1]) - 1] for name in names)
    text = prompt
    for k in range(1, 8):
        text = text.replace(f"<image {k}>", "<image>")
    pieces = text.split("<image>")
    layout: list[str | None] = []
    for i in range(len(images)):
        if i < len(pieces) - 1 and pieces[i].strip():
            layout.append(pieces[i].strip())
        layout.append(None)
    layout.append(pieces[-1].strip())
    return Prompt(text, images, tuple(layout))


def scienceqa_prompt(row: MCQRow) -> Prompt:
    """lmms-eval tasks/scienceqa/utils.py ``sqa_doc_to_text`` with format "default" (the kwargs
    of tasks/scienceqa/scienceqa_img.yaml every model but qwen_vl and idefics2 gets):
    "Context: {hint}\\n" when there is a hint, then "{question}\\n{choices}" ("A. text" lines
    joined by "\\n") and "\\nAnswer with the option's letter ...". Images first (the row's image
    when it has one, ``sqa_doc_to_visual``), then the text."""
    choices = "\n".join(f"{k}. {o}" for k, o in zip(row.letters, row.options, strict=True))
    context = f"Context: {row.hint}\n" if row.hint else ""
    return Prompt(f"{context}{row.question}\n{choices}\n{POST_PROMPT}", row.images)


MMSTAR_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly"
"""tasks/mmstar/_default_template_yaml's default post_prompt (no final period)."""


def mmstar_prompt(row: MCQRow) -> Prompt:
    """lmms-eval tasks/mmstar/utils.py ``mmstar_doc_to_text`` with the default kwargs: the
    question as MMStar phrases it (options inline: "...?\nOptions: A: x, B: y"), stripped,
    " Please answer yes or no." removed, then the post_prompt. The row's ``text`` is that
    question (``orch data prepare mmstar`` keeps it); a row without one gets it rebuilt from its
    question and options in MMStar's form. Images first (``mmstar_doc_to_visual``)."""
    inline = ", ".join(f"{k}: {o}" for k, o in zip(row.letters, row.options, strict=True))
    raw = row.text if row.text is not None else f"{row.question}\nOptions: {inline}"
    text = raw.strip().replace(" Please answer yes or no.", "")
    return Prompt(f"{text}{MMSTAR_POST_PROMPT}", row.images)


PROMPT_STYLES: dict[str, Callable[[MCQRow], Prompt]] = {
    "mmbench": mmbench_prompt,
    "mmmu": mmmu_prompt,
    "scienceqa": scienceqa_prompt,
    "mmstar": mmstar_prompt,
}


def build_prompt(row: MCQRow, style: str) -> Prompt:
    try:
        return PROMPT_STYLES[style](row)
    except KeyError:
        raise ValueError(
            f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}"
        ) from None


def to_vqa_sample(row: MCQRow, style: str, answer: str | None = None) -> VQASample:
    """The row as a one-turn VQA sample: the prompt as the user message, a letter (the gold
    one unless ``answer`` is given) as the assistant's."""
    prompt = build_prompt(row, style)
    turn = Turn(prompt.text, answer or row.answer, layout=prompt.layout)
    return VQASample(row.id, row.dataset, prompt.images, (turn,), row.line)


# --------------------------------------------------------------------------- training batches


@dataclass
class MCQBatch(PackedBatch):
    """Packed MCQ samples. ``anchored``: none of them has an image, so one more sample follows
    them in the rows (number ``len(ids)``), zero-weighted, with a blank image: every rank then
    runs the vision tower, as ZeRO's gradient buckets need (workers/data/microbatch.KindPart).
    ``ids`` and ``datasets`` are the real samples'; workers/perf counts the anchor's tokens,
    which are computed too."""

    anchored: bool = False

    @property
    def n_computed(self) -> int:
        """Samples in the rows, the anchor included."""
        return self.n_samples + int(self.anchored)


ANCHOR_ID = "orch:vision-anchor"


def anchor_image(side: int) -> Image.Image:
    """The anchor's image: black, side x side (one merged token), made in memory."""
    return Image.new("RGB", (side, side))


def anchor_sample(dataset: str) -> VQASample:
    """The vision anchor: one supervised letter after one image (``anchor_image``, passed to
    ``VQAEncoder.encode_decoded``: the sample names no file)."""
    return VQASample(ANCHOR_ID, dataset, (), (Turn("", "A"),))


def as_mcq_batch(packed: PackedBatch, anchored: bool) -> MCQBatch:
    """``packed`` as an MCQBatch; ``anchored``: its last sample is the anchor."""
    values = {f.name: getattr(packed, f.name) for f in fields(packed)}
    if anchored:
        assert packed.ids[-1] == ANCHOR_ID, packed.ids
        values |= {"ids": packed.ids[:-1], "datasets": packed.datasets[:-1]}
    return MCQBatch(**values, anchored=anchored)


# --------------------------------------------------------------------------- scoring


def prompt_of(full: EncodedVQA) -> EncodedVQA:
    """The generation prompt of an encoded one-turn sample: its tokens before the answer (what
    ``VQAEncoder.encode_prompt`` returns, without processing the images again)."""
    return before_last_answer(full, "")


def first_answer_token(encoded: EncodedVQA) -> int:
    supervised = (encoded.labels != IGNORE).nonzero()
    if supervised.numel() == 0:
        raise ValueError(f"sample {encoded.id!r} has no supervised answer token")
    return int(supervised[0, 0])


def option_encodings(
    encoder: VQAEncoder, row: MCQRow, style: str, cfg: ImageConfig
) -> list[EncodedVQA]:
    """The row encoded once per option letter, the letter as the answer. The images are
    processed once: the other letters replace the first letter's tokens when they tokenize to
    as many tokens and the answer starts with them (as Qwen's tokenizers do); otherwise that
    letter's sample is encoded in full."""
    first = encoder.encode(to_vqa_sample(row, style, row.letters[0]), cfg)
    start = first_answer_token(first)

    def tokens(text: str) -> list[int]:
        return list(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])

    base = tokens(row.letters[0])
    k = len(base)
    substitutable = first.labels[start : start + k].tolist() == base
    out = [first]
    for letter in row.letters[1:]:
        ids = tokens(letter)
        if not (substitutable and len(ids) == k):
            out.append(encoder.encode(to_vqa_sample(row, style, letter), cfg))
            continue
        input_ids, labels = first.input_ids.clone(), first.labels.clone()
        input_ids[start : start + k] = torch.tensor(ids)
        labels[start : start + k] = torch.tensor(ids)
        out.append(replace(first, input_ids=input_ids, labels=labels))
    return out


def answer_scores(
    model: Any, encoder: VQAEncoder, encoded: Sequence[EncodedVQA], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, summed log-likelihood) of each sample's answer tokens, teacher-forced, the
    samples packed one per row into one batch."""
    loss, packed = answer_losses(model, encoder, encoded, device)
    counts = torch.bincount(packed.segments[packed.targets != IGNORE], minlength=len(encoded))
    return loss, -loss * counts.to(device=loss.device, dtype=loss.dtype)

"""Single-image multiple-choice benchmarks: MMBench, MMStar, ScienceQA -> ``mcq`` rows.

Each row keeps the question, the hint, the options in letter order and the answer letter; the
``mcq`` kind builds the prompt (lmms-eval's "Answer with the option's letter from the given
choices directly."). Columns, splits and prompts as lmms-eval's tasks read them
(lmms_eval/tasks/{mmbench,mmstar,scienceqa}).
"""

from __future__ import annotations

import re

from workers.data.benchmarks.common import (
    LETTERS,
    Benchmark,
    Context,
    Converted,
    Output,
    RowError,
    SourceRow,
    column_id,
    integer,
    is_missing,
    mcq_row,
    optional_text,
    ordinal_id,
    strings,
    text,
)

# --------------------------------------------------------------------------- MMBench


def convert_mmbench(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """Options are the A..E columns that hold text: None, NaN and "nan" are dropped (as
    lmms-eval's create_options_prompt does) and the rest re-lettered from A, the answer with
    them. The dev set holds circular copies of each question (index + k * 1_000_000, options
    rotated); every copy is kept and ``group`` is the base index, for circular evaluation."""
    index = integer(row, "index")
    options: list[str] = []
    letter_of: dict[str, str] = {}
    for letter in LETTERS:
        if letter not in row.values:
            continue
        value = row.values[letter]
        if is_missing(value):
            ctx.note("MMBench options that are None/NaN/'nan' (dropped)")
            continue
        letter_of[letter] = LETTERS[len(options)]
        options.append(str(value))
    if any(old != new for old, new in letter_of.items()):
        ctx.note("MMBench rows re-lettered after a dropped option")
    answer = text(row, "answer").strip().upper()
    if answer not in letter_of:
        raise RowError("answer", f"{answer!r} is not the letter of a non-empty option")
    return "eval", mcq_row(
        rid,
        images=[ctx.images.write(row, "image", rid)],
        question=text(row, "question"),
        hint=optional_text(row, "hint"),
        options=options,
        answer=letter_of[answer],
        category=optional_text(row, "category"),
        group=str(index % 1_000_000),
    )


MMBENCH = Benchmark(
    name="mmbench",
    source="lmms-lab/MMBench, config en (lmms-eval task mmbench_en_dev)",
    split="dev",
    required=("index", "question", "answer", "image", "A", "B"),
    optional=("hint", "category", "C", "D", "E"),
    outputs={
        "eval": Output(
            "eval", "mcq", ("mmbench_accuracy",), description="MMBench (circular copies grouped)"
        )
    },
    row_id=column_id("index"),
    convert=convert_mmbench,
)

# --------------------------------------------------------------------------- MMStar

_NEXT_OPTION = "[,;\n]\\s*{letter}\\s*:\\s*"


def split_inline_options(question: str) -> tuple[str, list[str]] | None:
    """MMStar's "<question>\\nOptions: A: <a>, B: <b>, C: <c>, D: <d>" as (question, options);
    None when the text has no options in that form. Each option runs to the next letter's
    ", X: "; options are read in letter order from A."""
    at = question.rfind("Options:")
    if at < 0:
        return None
    head, body = question[:at].strip(), question[at + len("Options:") :]
    first = re.match(r"\s*A\s*:\s*", body)
    if first is None:
        return None
    options: list[str] = []
    pos = first.end()
    for letter in LETTERS[1:]:
        nxt = re.compile(_NEXT_OPTION.format(letter=letter)).search(body, pos)
        if nxt is None:
            break
        options.append(body[pos : nxt.start()].strip())
        pos = nxt.end()
    options.append(body[pos:].strip())
    if len(options) < 2 or not all(options):
        return None
    return head, options


def convert_mmstar(row: SourceRow, ctx: Context, rid: str) -> Converted:
    raw = text(row, "question")
    parsed = split_inline_options(raw)
    if parsed is None:
        raise RowError(
            "question",
            f"cannot parse options of the form 'Options: A: ..., B: ...' from {raw[-120:]!r} "
            "(MMStar keeps its options in the question text)",
        )
    question, options = parsed
    return "eval", mcq_row(
        rid,
        images=[ctx.images.write(row, "image", rid)],
        question=question,
        hint=None,
        options=options,
        answer=text(row, "answer").strip().upper(),
        category=optional_text(row, "category"),
        group=None,
        text=raw,
    )


MMSTAR = Benchmark(
    name="mmstar",
    source="Lin-Chen/MMStar (lmms-eval task mmstar)",
    split="val",
    required=("index", "question", "answer", "image"),
    optional=("category",),
    outputs={
        "eval": Output(
            "eval",
            "mcq",
            ("mmstar_accuracy",),
            description="MMStar",
            settings=(("prompt_style", "mmstar"),),
        )
    },
    row_id=column_id("index"),
    convert=convert_mmstar,
)

# --------------------------------------------------------------------------- ScienceQA


def convert_scienceqa(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """``answer`` is the index of the right choice; rows without an image keep no image (as
    lmms-eval's sqa_doc_to_visual); an empty hint is no hint. ``category`` is the subject
    (natural / social / language science), the breakdown ScienceQA reports."""
    choices = strings(row, "choices")
    answer = row.values.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise RowError("answer", f"expected the index of a choice, got {answer!r}")
    if not 0 <= answer < len(choices):
        raise RowError("answer", f"index {answer} outside the {len(choices)} choices")
    images = []
    if row.values.get("image") is not None:
        images.append(ctx.images.write(row, "image", rid))
    else:
        ctx.note("ScienceQA rows without an image (kept, without one)")
    return "eval", mcq_row(
        rid,
        images=images,
        question=text(row, "question"),
        hint=optional_text(row, "hint"),
        options=choices,
        answer=LETTERS[answer] if answer < len(LETTERS) else "?",  # "?": mcq_row names it
        category=optional_text(row, "subject"),
        group=None,
    )


SCIENCEQA = Benchmark(
    name="scienceqa",
    source="lmms-lab/ScienceQA, config ScienceQA-IMG (lmms-eval task scienceqa_img)",
    split="test",
    required=("question", "choices", "answer", "image"),
    optional=("hint", "subject"),
    outputs={
        "eval": Output(
            "eval",
            "mcq",
            ("scienceqa_accuracy",),
            description="ScienceQA-IMG",
            settings=(("prompt_style", "scienceqa"),),
        )
    },
    row_id=ordinal_id,
    convert=convert_scienceqa,
)

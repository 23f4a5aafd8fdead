"""Open-answer benchmarks: TextVQA, DocVQA, InfographicVQA, ChartQA, OCRBench, MME -> ``vqa``
rows.

The user turn is the prompt lmms-eval builds with its default ``lmms_eval_specific_kwargs``
(lmms_eval/tasks/<task>/utils.py, ``*_doc_to_text``); the assistant turn is the most common gold
answer and ``references`` holds every gold answer, for the benchmark's metric.
"""

from __future__ import annotations

from pathlib import Path

from workers.data.benchmarks.common import (
    Benchmark,
    Context,
    Converted,
    Output,
    RowError,
    SourceRow,
    column_id,
    optional_text,
    ordinal_id,
    strings,
    text,
    vqa_row,
)

SHORT = "\nAnswer the question using a single word or phrase."


def _image(row: SourceRow, ctx: Context, rid: str) -> list[Path]:
    return [ctx.images.write(row, "image", rid)]


# --------------------------------------------------------------------------- TextVQA


def convert_textvqa(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """lmms-eval capitalises the question (``str.capitalize``: the rest lower-cased)."""
    return "eval", vqa_row(
        rid,
        images=_image(row, ctx, rid),
        prompt=f"{text(row, 'question').capitalize()}{SHORT}",
        references=strings(row, "answers"),
        answer_column="answers",
    )


TEXTVQA = Benchmark(
    name="textvqa",
    source="lmms-lab/textvqa (lmms-eval task textvqa_val)",
    split="validation",
    required=("question_id", "question", "answers", "image"),
    optional=(),
    outputs={"eval": Output("eval", "vqa", ("vqa_accuracy", "exact_match"), description="TextVQA")},
    row_id=column_id("question_id"),
    convert=convert_textvqa,
)

# --------------------------------------------------------------------------- DocVQA, InfoVQA


def convert_document(row: SourceRow, ctx: Context, rid: str) -> Converted:
    return "eval", vqa_row(
        rid,
        images=_image(row, ctx, rid),
        prompt=f"{text(row, 'question')}{SHORT}",
        references=strings(row, "answers"),
        answer_column="answers",
    )


DOCVQA = Benchmark(
    name="docvqa",
    source="lmms-lab/DocVQA, config DocVQA (lmms-eval task docvqa_val)",
    split="validation",
    required=("questionId", "question", "answers", "image"),
    optional=(),
    outputs={"eval": Output("eval", "vqa", ("anls",), description="DocVQA")},
    row_id=column_id("questionId"),
    convert=convert_document,
)

INFOVQA = Benchmark(
    name="infovqa",
    source="lmms-lab/DocVQA, config InfographicVQA (lmms-eval task infovqa_val)",
    split="validation",
    required=("questionId", "question", "answers", "image"),
    optional=(),
    outputs={"eval": Output("eval", "vqa", ("anls",), description="InfographicVQA")},
    row_id=column_id("questionId"),
    convert=convert_document,
)

# --------------------------------------------------------------------------- ChartQA


def convert_chartqa(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """``category`` is the split's ``type`` (human_test / augmented_test), which lmms-eval
    reports apart."""
    return "eval", vqa_row(
        rid,
        images=_image(row, ctx, rid),
        prompt=f"{text(row, 'question')}\nAnswer the question with a single word.",
        references=[text(row, "answer")],
        answer_column="answer",
        category=optional_text(row, "type"),
    )


CHARTQA = Benchmark(
    name="chartqa",
    source="lmms-lab/ChartQA (lmms-eval task chartqa)",
    split="test",
    required=("question", "answer", "image"),
    optional=("type",),
    outputs={
        "eval": Output(
            "eval", "vqa", ("relaxed_accuracy",), description="ChartQA (human and augmented)"
        )
    },
    row_id=ordinal_id,
    convert=convert_chartqa,
)

# --------------------------------------------------------------------------- OCRBench


def convert_ocrbench(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """No prompt suffix (lmms-eval's default post_prompt is empty); ``answer`` is a list of
    accepted answers; ``category`` is the question type (its "Handwritten Mathematical
    Expression Recognition" is the HME100k subset, which lmms-eval matches ignoring spaces)."""
    return "eval", vqa_row(
        rid,
        images=_image(row, ctx, rid),
        prompt=text(row, "question").strip(),
        references=strings(row, "answer"),
        answer_column="answer",
        category=optional_text(row, "question_type"),
    )


OCRBENCH = Benchmark(
    name="ocrbench",
    source="echo840/OCRBench (lmms-eval task ocrbench)",
    split="test",
    required=("question", "answer", "image"),
    optional=("question_type",),
    outputs={"eval": Output("eval", "vqa", ("ocrbench_accuracy",), description="OCRBench")},
    row_id=ordinal_id,
    convert=convert_ocrbench,
)

# --------------------------------------------------------------------------- MME

MME_YES_NO = " Please answer yes or no."


def convert_mme(row: SourceRow, ctx: Context, rid: str) -> Converted:
    """Each image has two questions (one Yes, one No) sharing ``question_id`` (the image's
    path): both rows keep one image file and ``group`` is that id, for MME's accuracy+ (both
    right). lmms-eval's default prompt drops " Please answer yes or no." and appends the short
    answer instruction. Row ids are ``<question_id>#<k>``, k = 1, 2 in source order."""
    answer = text(row, "answer").strip()
    if answer.lower().replace(".", "") not in {"yes", "no"}:
        raise RowError("answer", f"expected Yes or No, got {answer!r}")
    ctx.seen[rid] += 1
    question = text(row, "question").strip().replace(MME_YES_NO, "")
    return "eval", vqa_row(
        f"{rid}#{ctx.seen[rid]}",
        images=[ctx.images.write(row, "image", rid, key=rid)],
        prompt=f"{question}{SHORT}",
        references=[answer],
        answer_column="answer",
        category=text(row, "category"),
        group=rid,
    )


def check_mme_pairs(ctx: Context) -> None:
    unpaired = sum(1 for n in ctx.seen.values() if n != 2)
    if unpaired:  # lmms-eval's aggregation asserts two questions per image
        ctx.note("MME images without exactly two questions (MME scores them in pairs)", unpaired)


MME = Benchmark(
    name="mme",
    source="lmms-lab/MME (lmms-eval task mme)",
    split="test",
    required=("question_id", "question", "answer", "image", "category"),
    optional=(),
    outputs={
        "eval": Output(
            "eval",
            "vqa",
            ("mme_perception", "mme_cognition", "mme_accuracy", "mme_accuracy_plus"),
            description="MME (perception and cognition)",
        )
    },
    row_id=column_id("question_id"),
    convert=convert_mme,
    finish=check_mme_pairs,
)

"""MMMU (MMMU/MMMU, one folder per subject; lmms-eval task mmmu_val): multiple-choice questions
-> ``mcq`` rows in ``eval.jsonl``; open questions -> ``vqa`` rows in ``open.jsonl``.

As lmms-eval's mmmu utils read a row: ``options`` is a Python list written as a string
(``ast.literal_eval``); the images are ``image_1`` ... ``image_7``, those whose ``<image k>``
marker appears in the question or the options, in marker-number order (mmmu_doc_to_visual:
sorted set of markers); the markers stay in the text. An open question's prompt is lmms-eval's:
the question, a blank line, "Answer the question using a single word or phrase.".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from workers.data.benchmarks.common import (
    Benchmark,
    Context,
    Converted,
    Output,
    RowError,
    SourceRow,
    column_id,
    mcq_row,
    text,
    vqa_row,
)

IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, 8))
MARKER = re.compile(r"<image (\d+)>")
OPEN_PROMPT = "\n\nAnswer the question using a single word or phrase."


def subject(row_id: str) -> str | None:
    """``validation_Art_Theory_12`` -> ``Art_Theory`` (lmms-eval's extract_subset_name)."""
    m = re.fullmatch(r"[^_]+_(.+)_\d+", row_id)
    return m.group(1) if m else None


def parse_options(raw: object) -> list[str]:
    if not isinstance(raw, str):
        raise RowError("options", f"expected a Python list written as a string, got {raw!r}")
    try:
        options = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise RowError("options", f"cannot parse {raw[:120]!r} as a Python list ({e})") from None
    if not isinstance(options, list) or not all(isinstance(o, str | int | float) for o in options):
        raise RowError("options", f"expected a list of strings, got {options!r}")
    return [str(o) for o in options]


def marker_images(row: SourceRow, ctx: Context, rid: str, texts: list[str]) -> list[Path]:
    """The image files of the ``<image k>`` markers in ``texts``, in marker-number order; a
    marker without its image is an error naming it."""
    markers = sorted({int(k) for t in texts for k in MARKER.findall(t)})
    set_columns = [c for c in IMAGE_COLUMNS if row.values.get(c) is not None]
    paths = []
    for k in markers:
        column = f"image_{k}"
        if column not in row.values:
            raise RowError(column, f"<image {k}> is in the text but the source has no {column}")
        if row.values[column] is None:
            raise RowError(
                column,
                f"<image {k}> is in the text but {column} is empty: the row has "
                f"{len(set_columns)} image(s) ({', '.join(set_columns) or 'none'}) for the "
                f"markers {[f'<image {m}>' for m in markers]}",
            )
        paths.append(ctx.images.write(row, column, f"{rid}_{k}"))
    unused = [c for c in set_columns if int(c.rsplit("_", 1)[1]) not in markers]
    if unused:
        ctx.note("MMMU images without a marker in the text (unused, as in lmms-eval)", len(unused))
    return paths


def convert_mmmu(row: SourceRow, ctx: Context, rid: str) -> Converted:
    question = text(row, "question")
    options = parse_options(row.values.get("options"))
    kind = text(row, "question_type").strip()
    images = marker_images(row, ctx, rid, [question, *options])
    answer = text(row, "answer").strip()
    if kind == "multiple-choice":
        return "eval", mcq_row(
            rid,
            images=images,
            question=question,
            hint=None,
            options=options,
            answer=answer.upper() if len(answer) == 1 else answer,
            category=subject(rid),
            group=None,
        )
    if kind == "open":
        ctx.note("MMMU open questions (written to open.jsonl)")
        return "open", vqa_row(
            rid,
            images=images,
            prompt=f"{question}{OPEN_PROMPT}",
            references=[answer],
            answer_column="answer",
            category=subject(rid),
        )
    raise RowError("question_type", f"expected 'multiple-choice' or 'open', got {kind!r}")


MMMU = Benchmark(
    name="mmmu",
    source="MMMU/MMMU, every subject (lmms-eval task mmmu_val)",
    split="validation",
    required=("id", "question", "options", "answer", "question_type", "image_1"),
    optional=IMAGE_COLUMNS[1:],
    outputs={
        "eval": Output(
            "eval",
            "mcq",
            ("mmmu_accuracy",),
            description="MMMU multiple-choice questions",
            settings=(("prompt_style", "mmmu"),),
        ),
        # lmms-eval scores open answers with MMMU's own normalised matching (eval_open).
        "open": Output(
            "open",
            "vqa",
            ("mmmu_open_accuracy",),
            table_suffix="_open",
            description="MMMU open questions",
        ),
    },
    row_id=column_id("id"),
    convert=convert_mmmu,
)

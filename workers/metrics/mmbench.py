"""MMBench without a judge: what lmms-eval's ``mmbench_*_static`` tasks compute
(tasks/mmbench/mmbench_evals.py ``MMBench_Evaluator``, ``eval_method="static"``).

A row's letter is ``can_infer`` (the prediction names exactly one letter, or contains exactly
one option's text), else ``extract_mcq_answer`` over the row's option letters. MMBench's
circular evaluation groups the rows of one question (``index``, ``index + 1e6``, ...; rotated
options): the question scores 1 only when every row of it is right.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping, Sequence
from typing import Any

from workers.metrics.choice import extract_mcq_answer

logger = logging.getLogger(__name__)

CIRCULAR_STRIDE = 1_000_000
_API_FAILURE = "Failed to obtain answer via API"
# (prefix, suffix) around a letter, in the order MMBench tries them.
_AFFIXES = [("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
            (":", ""), (":", ","), (":", "."), (":", ")"), (":", ").")]  # fmt: skip


def can_infer_option(answer: str, num_choice: int = 5) -> str | bool:
    """The one letter among the first ``num_choice`` (5 whatever the question's options, as
    MMBench calls it) that stands alone as a word, or with one of ``_AFFIXES``; else False.

    MMBench's quirk, kept: a lone "A" in an answer of more than 3 words may be the article, so
    the bare-word rule gives up and only the affixed forms are tried."""
    choices = string.ascii_uppercase[:num_choice]
    if _API_FAILURE in answer:
        return False

    def count(splits: list[str], prefix: str = "", suffix: str = "") -> int:
        return sum(prefix + c + suffix in splits for c in choices)

    splits = [x.strip() for x in answer.split()]
    if count(splits) == 1:
        for ch in choices:
            if "A" in splits and len(splits) > 3:
                logger.debug("A might be a quantifier in the string: %s", answer)
                break
            if ch in splits:
                return ch
    for prefix, suffix in _AFFIXES:
        if count(splits, prefix, suffix) == 1:
            for ch in choices:
                if prefix + ch + suffix in splits:
                    return ch
    return False


def can_infer_text(answer: str, choices: Mapping[str, str]) -> str | bool:
    """The one option whose text (lower-cased) occurs in the answer (lower-cased); else False."""
    answer = answer.lower()
    if any(k not in "ABCD" for k in choices):
        raise ValueError(f"MMBench options are A-D, got {sorted(choices)}")
    cands = [k for k, text in choices.items() if str(text).lower() in answer]
    return cands[0] if len(cands) == 1 else False


def can_infer(answer: str, choices: Mapping[str, str]) -> str | bool:
    """``can_infer_option``, else ``can_infer_text``."""
    copt = can_infer_option(answer)
    return copt if copt else can_infer_text(answer, choices)


def build_choices(options: Sequence[str | None]) -> dict[str, str]:
    """MMBench's ``build_choices``: options A-D that are present (a missing one is None here,
    NaN in lmms-eval's DataFrame)."""
    return {ch: opt for ch, opt in zip("ABCD", options, strict=False) if opt is not None}


def mmbench_row_letter(prediction: str, options: Sequence[str | None]) -> str:
    """The letter one row's prediction gives ("" for none): ``can_infer``, else
    ``extract_mcq_answer`` over the row's letters (``eval_sub_data`` with ``static_only``)."""
    choices = build_choices(options)
    inferred = can_infer(prediction, choices)
    if inferred:
        return str(inferred)
    return extract_mcq_answer(prediction, choices=sorted(choices))


def mmbench_row_hit(prediction: str, options: Sequence[str | None], answer: str) -> float:
    return float(mmbench_row_letter(prediction, options) == answer)


def mmbench_circular_hits(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per question (main index < 1e6 present among the rows): 1.0 when each of its rows
    (``index % 1e6`` equal) is right, from rows with ``index``, ``prediction``, ``options``,
    ``answer``. Rows whose question's main row is absent are left out, as in lmms-eval."""
    answer_of = {int(r["index"]): r["answer"] for r in rows}
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: int(r["index"])):
        groups.setdefault(int(r["index"]) % CIRCULAR_STRIDE, []).append(r)
    return {
        idx: float(
            all(
                mmbench_row_letter(str(r["prediction"]), r["options"]) == answer_of[int(r["index"])]
                for r in groups[idx]
            )
        )
        for idx in sorted(answer_of)
        if idx < CIRCULAR_STRIDE
    }

"""OCRBench (tasks/ocrbench/utils.py): a question scores 1 when a reference answer occurs inside
the prediction, after per-category normalisation; the benchmark's score is the count right.

Two divergences from lmms-eval's ``ocrbench_aggregate_accuracy``, both plain bugs there: its
per-category totals live in a module-level dict, so a second aggregation in one process adds to
the first; and it divides the total by 1000 (OCRBench's size) whatever the number of samples.
Here the totals are computed afresh each time and the accuracy divides by the samples scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

HMER = "Handwritten Mathematical Expression Recognition"
RECOGNITION = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)
CATEGORIES = (
    *RECOGNITION,
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    HMER,
)


def fold_fullwidth_ascii(text: str) -> str:
    """Fullwidth ASCII (U+FF01-U+FF5E) to ASCII and the ideographic space to a space."""
    out = []
    for char in text:
        codepoint = ord(char)
        if 0xFF01 <= codepoint <= 0xFF5E:
            out.append(chr(codepoint - 0xFEE0))
        elif codepoint == 0x3000:
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def ocrbench_score(prediction: str, answers: str | Sequence[str], dataset: str) -> int:
    """tasks/ocrbench/utils.py ``ocrbench_process_results``'s score for one question.

    HME100k (the formula category): all spaces and newlines removed on both sides, case kept.
    Every other source dataset: fullwidth ASCII folded, lower-cased, stripped, newlines to
    spaces. Then 1 when any answer is a substring of the prediction (an empty answer always is).
    """
    pred = prediction.strip()
    golds = [answers] if isinstance(answers, str) else list(answers)
    if dataset == "HME100k":

        def norm(s: str) -> str:
            return s.strip().replace("\n", " ").replace(" ", "")
    else:

        def norm(s: str) -> str:
            return fold_fullwidth_ascii(s).lower().strip().replace("\n", " ")

    predict = norm(pred)
    return int(any(norm(gold) in predict for gold in golds))


def ocrbench_dataset(category: str, dataset: str | None = None) -> str:
    """The source dataset that decides the rule: the record's own when it has one, else
    HME100k for the formula category (the only OCRBench category drawn from HME100k)."""
    if dataset is not None:
        return dataset
    if category not in CATEGORIES:
        raise ValueError(f"unknown OCRBench category {category!r}; known: {', '.join(CATEGORIES)}")
    return "HME100k" if category == HMER else ""


def ocrbench_scores(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Per-category counts right, "Text Recognition" (the six recognition categories) and
    "Final Score" (all ten), from results with ``question_type`` and ``score``: the figures
    lmms-eval writes to ocrbench_results.txt, of this call's results only."""
    totals = dict.fromkeys(CATEGORIES, 0)
    for result in results:
        if result["question_type"] not in totals:
            raise ValueError(
                f"unknown OCRBench category {result['question_type']!r}; "
                f"known: {', '.join(CATEGORIES)}"
            )
        totals[result["question_type"]] += int(result["score"])
    recognition = sum(totals[c] for c in RECOGNITION)
    return {**totals, "Text Recognition": recognition, "Final Score": sum(totals.values())}


def ocrbench_aggregate_accuracy(results: Sequence[Mapping[str, Any]]) -> float:
    """The share right: "Final Score" over the samples scored (lmms-eval: over 1000, with totals
    carried over from earlier calls; see the module docstring)."""
    if not results:
        raise ValueError("no samples: a metric over nothing is undefined")
    return ocrbench_scores(results)["Final Score"] / len(results)

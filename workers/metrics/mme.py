"""MME (tasks/mme/utils.py): yes/no questions, two per image. Per category, each image scores
acc (share of its two answers right) x 100 + acc_plus (both right) x 100, averaged over the
category's images; the perception score sums the ten perception categories present, the
cognition score the others (so 2000 and 800 at most)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
    "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse_pred_ans(pred_ans: str) -> str:
    """Otter's yes/no parser: "yes" / "no" / "other" from the lower-cased answer without periods:
    exactly yes or no; a single "y" or "n"; else "yes" or "no" inside its first 4 characters
    ("yes" first)."""
    pred_ans = pred_ans.lower().strip().replace(".", "")
    if pred_ans in ["yes", "no"]:
        return pred_ans
    if len(pred_ans) == 1:
        return {"y": "yes", "n": "no"}.get(pred_ans, "other")
    prefix = pred_ans[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_score(prediction: str, answer: str) -> float:
    """``mme_process_results``'s score: 1.0 when the parsed prediction is the gold yes/no."""
    gold = answer.lower().strip().replace(".", "")
    if gold not in ("yes", "no"):
        raise ValueError(f"an MME answer is yes or no, got {answer!r}")
    return 1.0 if parse_pred_ans(prediction) == gold else 0.0


def is_perception(category: str) -> bool:
    """lmms-eval routes every category that is not a perception one to the cognition score."""
    return category in PERCEPTION


def mme_pairs(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """category -> question_id (the image) -> its scores; every image must have exactly two."""
    by_category: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for result in results:
        by_category[result["category"]].setdefault(str(result["question_id"]), []).append(
            float(result["score"])
        )
    for category, images in by_category.items():
        for qid, scores in images.items():
            if len(scores) != 2:
                raise ValueError(
                    f"MME scores images in pairs of questions; {category} {qid!r} has "
                    f"{len(scores)} (evaluate every question of an image, or none)"
                )
    return by_category


def mme_category_scores(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per category: the mean over its images of acc x 100 + acc_plus x 100."""
    out: dict[str, float] = {}
    for category, images in mme_pairs(results).items():
        total = 0.0
        for scores in images.values():
            acc = sum(scores) / len(scores) * 100.0
            acc_plus = (sum(scores) == 2) * 100.0
            total += acc_plus + acc
        out[category] = total / len(images)
    return out


def mme_aggregate_results(results: Sequence[Mapping[str, Any]]) -> float:
    """tasks/mme/utils.py ``mme_aggregate_results``: the sum of the categories' scores (lmms-eval
    calls it once with the perception results, once with the cognition ones)."""
    return sum(mme_category_scores(results).values())


def mme_acc_plus(results: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per image (all categories): 1.0 when both of its questions are right."""
    return [
        float(sum(scores) == 2)
        for images in mme_pairs(results).values()
        for scores in images.values()
    ]

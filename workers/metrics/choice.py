"""Picking the option letter out of a generated answer, as lmms-eval's multiple-choice tasks do.

- ``parse_multi_choice_response``: MMMU's (tasks/_task_utils/mmmu_mcq_utils.py
  ``parse_mmmu_multi_choice_response``), used by mmmu_val and the MMMU family.
- ``extract_mcq_answer``: tasks/_task_utils/mcq_extract.py, used by MMStar (``mmstar_exact_match``)
  and by mmbench_*_static when MMBench's own matching finds nothing.
- ``sqa_exact_match``: tasks/scienceqa/utils.py ``sqa_process_results`` (LLaVA's rule).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

# ------------------------------------------------------------------ MMMU


def get_multi_choice_info(
    options: Sequence[str], start_chr: str = "A"
) -> tuple[dict[str, str], list[str]]:
    """``(index2ans, all_choices)``: ``{"A": options[0], ...}`` and ``["A", "B", ...]``."""
    index2ans: dict[str, str] = {}
    all_choices: list[str] = []
    for i, option in enumerate(options):
        choice = chr(ord(start_chr) + i)
        index2ans[choice] = option
        all_choices.append(choice)
    return index2ans, all_choices


def _first_max(values: Sequence[int]) -> int:
    """``np.argmax``: the index of the first largest value."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def parse_multi_choice_response(
    response: str,
    all_choices: Sequence[str],
    index2ans: Mapping[str, str],
    rng: random.Random | None = None,
) -> str:
    """MMMU's parser: the option letter a response names.

    In order, the first rule that finds any letter decides: "(X)" anywhere; "X " (the response
    padded with spaces, so a final "X" counts); "X."; then, for a response of more than five
    words only, an option's text inside it. Several letters: the one whose "(X)" (or " X ", or
    option text) occurs last; a letter found by "X " or "X." whose " X " does not occur ranks at
    -1, so of those the first in option order wins. None: a random letter, drawn as lmms-eval does
    with ``random.choice`` from the global random state, or from ``rng`` when one is given (orch's
    metrics give one seeded per sample, so that a score does not depend on sample order).
    """
    if not all_choices:
        raise ValueError("a multiple-choice question without options")
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "

    index_ans = True
    ans_with_brack = False
    candidates: list[str] = []
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True
    if not candidates:
        candidates = [c for c in all_choices if f"{c} " in response]
    if not candidates:
        candidates = [c for c in all_choices if f"{c}." in response]
    if not candidates and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False

    if not candidates:
        return (rng.choice if rng is not None else random.choice)(list(all_choices))
    if len(candidates) == 1:
        return candidates[0]
    if not index_ans:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif ans_with_brack:
        starts = [response.rfind(f"({c})") for c in candidates]
    else:
        starts = [response.rfind(f" {c} ") for c in candidates]
    return candidates[_first_max(starts)]


def eval_multi_choice(gold_i: str | Sequence[str], pred_i: str) -> bool:
    """MMMU: right when the parsed letter equals the answer (or one of a list of answers)."""
    if isinstance(gold_i, list):
        return any(answer == pred_i for answer in gold_i)
    return gold_i == pred_i


# ------------------------------------------------------------------ mcq_extract (MMStar, MMBench)

_DEFAULT_CHOICES = ["A", "B", "C", "D", "E", "F", "G", "H"]
_ANSWER_PHRASES = [
    "the answer is", "answer is", "the correct answer is", "correct answer is",
    "the best answer is", "best answer is", "the correct option is", "correct option is",
    "the best option is", "best option is", "the choice is", "choice is",
    "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:",  # Korean
    "答案是", "答案为", "选",  # Chinese
    "答えは",  # Japanese
]  # fmt: skip
# Higher = more confident that this is the intended answer.
_FORMAT_PRIORITY = {
    "start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4,
    "right_paren": 3, "space": 2, "fallback": 0,
}  # fmt: skip


def extract_mcq_answer(response: str, choices: Sequence[str] | None = None) -> str:
    """tasks/_task_utils/mcq_extract.py ``extract_mcq_answer``: the letter (or "") a response
    gives, by format priority (a standalone letter at the start, at the end, after an answer
    phrase, "(X)", "X.", "X:", "X)", "X ", then any occurrence), the last position within a
    format. ``choices`` defaults to A-H (an empty list too, as there)."""
    if not response or not response.strip():
        return ""
    all_choices = list(choices) if choices else _DEFAULT_CHOICES
    text = response.strip()
    for char in [",", ".", "!", "?", ";", ":", "'", '"']:
        text = text.strip(char)
    text = " " + text + " "

    candidates: list[tuple[str, int, str]] = []
    for fmt, pattern in (
        ("parentheses", "({})"),
        ("period", "{}."),
        ("colon", "{}:"),
        ("right_paren", "{})"),
        ("space", "{} "),
    ):
        for ch in all_choices:
            if pattern.format(ch) in text:
                candidates.append((ch, text.rfind(pattern.format(ch)), fmt))
    text_lower = text.lower()
    for phrase in _ANSWER_PHRASES:
        idx = text_lower.find(phrase)
        if idx != -1:
            after = idx + len(phrase)
            for ch in all_choices:
                ch_pos = text.find(ch, after)
                if ch_pos != -1:
                    candidates.append((ch, ch_pos, "phrase"))
    stripped = text.strip()
    for ch in all_choices:
        if stripped.startswith(ch) and (len(stripped) == 1 or not stripped[1].isalpha()):
            candidates.append((ch, 0, "start"))
    for ch in all_choices:
        if stripped.endswith(ch) and (len(stripped) == 1 or not stripped[-2].isalpha()):
            candidates.append((ch, len(text) - 1, "end"))
    if not candidates:
        for ch in all_choices:
            if ch in text:
                candidates.append((ch, text.rfind(ch), "fallback"))
    if not candidates:
        return ""
    # A stable sort, reversed: among equal (priority, position) the first found stays first.
    candidates.sort(key=lambda x: (_FORMAT_PRIORITY.get(x[2], 0), x[1]), reverse=True)
    return candidates[0][0]


def mmstar_exact_match(pred: str, gt: str) -> float:
    """tasks/mmstar/utils.py ``exact_match``: ``extract_mcq_answer`` over A-D against the gold
    letter (stripped, upper-cased)."""
    letter = extract_mcq_answer(pred, choices=["A", "B", "C", "D"])
    return 1.0 if letter == gt.strip().upper() else 0.0


# ------------------------------------------------------------------ ScienceQA


def sqa_exact_match(prediction: str, target: str) -> float:
    """tasks/scienceqa/utils.py ``sqa_process_results`` (LLaVA's rule): right when the stripped
    prediction is the target letter (any case), or starts with "<upper-case letter>." whose
    letter is the target."""
    target = target.strip().lower()
    pred = prediction.strip()
    if pred.lower() == target:
        return 1.0
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return 1.0 if pred[0].lower() == target else 0.0
    return 0.0

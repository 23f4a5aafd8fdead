"""MMMU's scoring (tasks/mmmu/utils.py, from the official MMMU eval_utils.py): open answers parsed
into candidate strings and numbers, multiple-choice answers by ``parse_multi_choice_response``
(workers.metrics.choice), one right/wrong per question, accuracy over questions."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from workers.metrics.choice import eval_multi_choice

Candidate = str | float

_COMMA_NUMBER = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_SCIENTIFIC_NUMBER = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_SIMPLE_NUMBER = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_TRIVIAL = [":", ",", ".", "!", "?", ";", ":", "'"]


def extract_numbers(string: str) -> list[str]:
    """Numbers with thousands commas, then in scientific notation, then plain ones (the same
    number can come out of more than one pattern)."""
    return (
        _COMMA_NUMBER.findall(string)
        + _SCIENTIFIC_NUMBER.findall(string)
        + _SIMPLE_NUMBER.findall(string)
    )


def check_is_number(string: str) -> bool:
    """``float()`` accepts it once commas are removed ("nan", "inf" and "1_000" included)."""
    try:
        float(string.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(string: str) -> list[Candidate]:
    """A number becomes ``[round(float, 2)]``; other text is lower-cased, and a one-character
    text becomes ``[" x", "x "]`` (so it matches only as a word)."""
    string = string.strip()
    if check_is_number(string):
        return [round(float(string.replace(",", "")), 2)]
    string = string.lower()
    if len(string) == 1:
        return [" " + string, string + " "]
    return [string]


def _key_subresponses(response: str) -> list[str]:
    """The tails after the last answer indicator ("so ", "is ", "answer ", ... and "=" in the
    last sentence) of each sentence; the whole response when no sentence has one."""
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    key_responses = []
    for index, resp in enumerate(sub_responses):
        if index == len(sub_responses) - 1:
            indicators.extend(["="])  # the last sentence may be just an equation
        shortest: str | None = None
        for indicator in indicators:
            if indicator in resp:
                tail = resp.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            key_responses.append(shortest)
    return key_responses or [response]


def parse_open_response(response: str) -> list[Candidate]:
    """The candidate answers of an open question: the key sub-responses and the numbers in
    them, each through ``normalize_str``, without duplicates. As in lmms-eval the list comes
    out of a ``set``: its order is arbitrary (``eval_open`` does not depend on it)."""
    key_responses = _key_subresponses(response)
    pred_list: list[str] = list(key_responses)
    for resp in key_responses:
        pred_list.extend(extract_numbers(resp))
    normalised: list[Candidate] = []
    for pred in pred_list:
        normalised.extend(normalize_str(pred))
    return list(set(normalised))


def eval_open(gold_i: str | Sequence[str], pred_i: Sequence[Candidate]) -> bool:
    """Right when a normalised text answer occurs inside a text candidate, or a number
    candidate equals a normalised number answer (rounded to 2 decimals on both sides)."""
    norm_answers: list[Candidate] = []
    if isinstance(gold_i, list):
        for answer in gold_i:
            norm_answers.extend(normalize_str(answer))
    else:
        norm_answers = normalize_str(str(gold_i))
    for pred in pred_i:
        if isinstance(pred, str):
            if any(isinstance(a, str) and a in pred for a in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False


def mmmu_is_correct(question_type: str, answer: Any, parsed_preds: Sequence[Any]) -> bool:
    """``evaluate_mmmu`` for one sample: right when any parsed prediction is."""
    for pred_i in parsed_preds:
        if question_type == "multiple-choice":
            correct = eval_multi_choice(answer, pred_i)
        else:
            correct = eval_open(answer, pred_i)
        if correct:
            return True
    return False


def evaluate_mmmu(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, float]]:
    """``(judge_dict, {"acc": share right})`` over samples with ``id``, ``question_type``,
    ``answer`` and ``parsed_pred`` (a list of parsed predictions)."""
    if not samples:
        raise ValueError("no samples: a metric over nothing is undefined")
    judge: dict[str, str] = {}
    right = 0
    for sample in samples:
        ok = mmmu_is_correct(sample["question_type"], sample["answer"], sample["parsed_pred"])
        judge[sample["id"]] = "Correct" if ok else "Wrong"
        right += ok
    return judge, {"acc": right / len(samples)}


def extract_subset_name(input_string: str) -> str:
    """The subject of an MMMU id: "validation_Art_Theory_12" -> "Art_Theory"."""
    split = input_string.split("_")[0]
    match = re.compile(rf"^{split}_(.+?)_\d+$").search(input_string)
    if match is None:
        raise ValueError(f'No match found in "{input_string}"')
    return match.group(1)


def calculate_ins_level_acc(results: Mapping[str, Mapping[str, float]]) -> float:
    """Accuracy over instances from per-subject ``acc`` and ``num_example``."""
    acc = 0.0
    ins_num = 0.0
    for cat_results in results.values():
        acc += cat_results["acc"] * cat_results["num_example"]
        ins_num += cat_results["num_example"]
    return 0.0 if ins_num == 0 else acc / ins_num


def mmmu_aggregate_results(results: Sequence[Mapping[str, Any]]) -> float:
    """tasks/mmmu/utils.py ``mmmu_aggregate_results``: per-subject accuracies (by ``subdomain``)
    weighted by their sizes, rounded to 5 decimals as lmms-eval returns it."""
    by_subject: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for result in results:
        by_subject[result["subdomain"]].append(result)
    evaluation: dict[str, dict[str, float]] = {}
    for subject, samples in by_subject.items():
        _, metric = evaluate_mmmu(samples)
        evaluation[subject] = {**metric, "num_example": len(samples)}
    return round(calculate_ins_level_acc(evaluation), 5)

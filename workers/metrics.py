"""Eval metrics with the definitions lmms-eval uses, each returned with its standard error.

Every metric is the mean of per-sample scores; its standard error is lmms-eval's
``mean_stderr``: the sample standard deviation (n - 1) over sqrt(n). Empty or mismatched inputs
are errors, never a silent 0.

- VQA accuracy: lmms-eval's ``EvalAIAnswerProcessor`` normalisation of prediction and answers,
  then the VQAv2 rule averaged over the 10 leave-one-out subsets of the ground truths:
  min(1, matches among the other answers / 3).
- ANLS (DocVQA): 1 - min over gold answers of Levenshtein(normalised gold, normalised pred) /
  max(len(gold), len(pred)) (raw lengths, as lmms-eval), and 0 when that is below 0.5.
- Relaxed accuracy (ChartQA): numbers (a trailing % is divided by 100) within 5 % of a non-zero
  target; anything else (a target of 0 included) compared as case-insensitive strings.
- Token F1 (SQuAD): bag-of-tokens F1 after lower-casing and removing punctuation and articles,
  the maximum over references.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    value: float
    stderr: float
    n: int


def mean_with_stderr(scores: Sequence[float]) -> Metric:
    n = len(scores)
    if n == 0:
        raise ValueError("no samples: a metric over nothing is undefined")
    mean = sum(scores) / n
    if n < 2:
        return Metric(mean, 0.0, n)
    var = sum((x - mean) ** 2 for x in scores) / (n - 1)
    return Metric(mean, math.sqrt(var) / math.sqrt(n), n)


def _pairs(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references")


# ------------------------------------------------------------------ classification


def accuracy(correct: Sequence[bool]) -> Metric:
    return mean_with_stderr([float(c) for c in correct])


def top_k_accuracy(ranked: Sequence[Sequence[int]], labels: Sequence[int], k: int) -> Metric:
    _pairs(ranked, labels)
    return mean_with_stderr([float(y in r[:k]) for r, y in zip(ranked, labels, strict=True)])


def per_class_accuracy(labels: Sequence[int], preds: Sequence[int]) -> dict[int, float]:
    _pairs(labels, preds)
    hits: dict[int, list[bool]] = {}
    for y, p in zip(labels, preds, strict=True):
        hits.setdefault(y, []).append(y == p)
    return {y: sum(h) / len(h) for y, h in sorted(hits.items())}


# ------------------------------------------------------------------ exact match

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def exact_match(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    ignore_case: bool = True,
    ignore_punctuation: bool = False,
) -> Metric:
    _pairs(predictions, references)

    def norm(s: str) -> str:
        s = s.strip()
        if ignore_case:
            s = s.lower()
        if ignore_punctuation:
            s = _PUNCT.sub("", s)
        return s

    scores = []
    for pred, ref in zip(predictions, references, strict=True):
        refs = [ref] if isinstance(ref, str) else list(ref)
        scores.append(float(norm(pred) in {norm(r) for r in refs}))
    return mean_with_stderr(scores)


# ------------------------------------------------------------------ VQA accuracy (EvalAI)

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
              "@", "`", ",", "?", "!"]  # fmt: skip
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def vqa_normalize(text: str) -> str:
    """lmms-eval's EvalAIAnswerProcessor: tokenise, punctuation, numbers, articles, contractions."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _VQA_PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> Metric:
    _pairs(predictions, answers)
    scores = []
    for pred, gts in zip(predictions, answers, strict=True):
        if not gts:
            raise ValueError("a VQA question without ground-truth answers")
        p = vqa_normalize(pred)
        norm = [vqa_normalize(g) for g in gts]
        per_subset = [
            min(1.0, sum(1 for j, g in enumerate(norm) if j != i and g == p) / 3)
            for i in range(len(norm))
        ]
        scores.append(sum(per_subset) / len(per_subset))
    return mean_with_stderr(scores)


# ------------------------------------------------------------------ ANLS


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls_score(prediction: str, golds: Sequence[str], threshold: float = 0.5) -> float:
    if not golds:
        raise ValueError("an ANLS question without gold answers")
    det = " ".join(prediction.strip().lower().split())
    distances = []
    for gold in golds:
        gt = " ".join(gold.strip().lower().split())
        length = max(len(gold.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else levenshtein(gt, det) / length)
    score = 1.0 - min(distances)
    return 0.0 if score < threshold else score


def anls(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], threshold: float = 0.5
) -> Metric:
    _pairs(predictions, answers)
    return mean_with_stderr(
        [anls_score(p, g, threshold) for p, g in zip(predictions, answers, strict=True)]
    )


# ------------------------------------------------------------------ relaxed accuracy (ChartQA)


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
    pred, tgt = _to_float(prediction), _to_float(target)
    if pred is not None and tgt:  # a target of 0 falls through to the string comparison
        return abs(pred - tgt) / abs(tgt) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(predictions: Sequence[str], targets: Sequence[str]) -> Metric:
    _pairs(predictions, targets)
    return mean_with_stderr(
        [float(relaxed_correctness(p, t)) for p, t in zip(predictions, targets, strict=True)]
    )


# ------------------------------------------------------------------ token F1 (SQuAD)

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return _SQUAD_ARTICLES.sub(" ", text).split()


def f1_score(prediction: str, reference: str) -> float:
    pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> Metric:
    _pairs(predictions, references)
    scores = []
    for pred, ref in zip(predictions, references, strict=True):
        refs = [ref] if isinstance(ref, str) else list(ref)
        scores.append(max(f1_score(pred, r) for r in refs))
    return mean_with_stderr(scores)

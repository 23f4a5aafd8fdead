"""Eval metrics defined as lmms-eval defines them, each with its standard error.

Matched against lmms-eval 0.7.3 (the wheel from PyPI, read, not imported). Every metric is the
mean of per-sample scores; ``stderr`` is lmms-eval's ``mean_stderr`` (api/metrics.py): the sample
standard deviation (ddof=1) over sqrt(n), here 0.0 when n < 2 (lmms-eval reports "N/A").
Empty inputs and mismatched lengths raise ValueError, never a silent 0.

- exact_match: HF ``evaluate``'s exact_match as ported in lmms-eval (``exact_match_hf_evaluate``),
  a sample scoring 1 when any reference matches (api/task.py ``process_results``).
- vqa_accuracy: ``EvalAIAnswerProcessor`` (tasks/_task_utils/vqa_eval_metric.py) and the VQA rule
  averaged over the leave-one-out subsets of the answers: min(1, matches among the others / 3).
- anls: api/metrics.py ``anls`` (DocVQA), with a score of exactly ``threshold`` kept.
- relaxed_correctness: tasks/chartqa/utils.py ``relaxed_correctness`` (ChartQA).
- token_f1: SQuAD v2 ``compute_f1`` as in tasks/mmsearch/score/f1_score.py ``get_f1_score``.
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Metric:
    value: float
    stderr: float
    n: int


def mean_with_stderr(scores: Sequence[float]) -> Metric:
    """lmms-eval api/metrics.py ``mean`` and ``mean_stderr`` (``sample_stddev`` / sqrt(n))."""
    n = len(scores)
    if n == 0:
        raise ValueError("no samples: a metric over nothing is undefined")
    xs = [float(x) for x in scores]
    mean = sum(xs) / n
    if n < 2:
        return Metric(mean, 0.0, n)
    sample_stddev = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Metric(mean, sample_stddev / math.sqrt(n), n)


def _same_length(a: Sequence[object], b: Sequence[object], what: str = "references") -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} {what}")


def _options(ref: str | Sequence[str]) -> list[str]:
    refs = [ref] if isinstance(ref, str) else list(ref)
    if not refs:
        raise ValueError("a sample without any reference answer")
    return refs


# ------------------------------------------------------------------ classification


def accuracy(correct: Sequence[bool]) -> Metric:
    return mean_with_stderr([float(c) for c in correct])


def mean_loss(losses: Sequence[float]) -> Metric:
    return mean_with_stderr(losses)


def top_k_accuracy(ranked_preds: Sequence[Sequence[int]], labels: Sequence[int], k: int) -> Metric:
    """1 for a sample whose label is among its first ``k`` ranked predictions."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    _same_length(ranked_preds, labels, "labels")
    hits = [float(y in list(r)[:k]) for r, y in zip(ranked_preds, labels, strict=True)]
    return mean_with_stderr(hits)


def per_class_accuracy(labels: Sequence[int], preds: Sequence[int]) -> dict[int, float]:
    """Accuracy over the samples of each label present, keyed by label in ascending order."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    if not labels:
        raise ValueError("no samples: a metric over nothing is undefined")
    hits: dict[int, list[bool]] = {}
    for y, p in zip(labels, preds, strict=True):
        hits.setdefault(y, []).append(y == p)
    return {y: sum(h) / len(h) for y, h in sorted(hits.items())}


# ------------------------------------------------------------------ exact match

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    ignore_case: bool = True,
    ignore_punctuation: bool = False,
    strip: bool = True,
) -> Metric:
    """lmms-eval ``exact_match_hf_evaluate``: lower-case, then drop string.punctuation.

    ``strip`` (not in lmms-eval; its filters usually strip) trims whitespace after those steps.
    ``strip=False, ignore_case=False`` is lmms-eval's default behaviour.
    """
    _same_length(predictions, references)

    def norm(s: str) -> str:
        if ignore_case:
            s = s.lower()
        if ignore_punctuation:
            s = s.translate(_DROP_PUNCTUATION)
        return s.strip() if strip else s

    return mean_with_stderr(
        [
            float(any(norm(pred) == norm(r) for r in _options(ref)))
            for pred, ref in zip(predictions, references, strict=True)
        ]
    )


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
# "(?!<=\d)" is a look-ahead typo for a look-behind in the original; kept, as everyone does.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
# The original passes re.UNICODE (== 32) as sub()'s positional *count*: at most 32 periods go.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def _process_punctuation(text: str) -> str:
    """EvalAIAnswerProcessor.process_punctuation."""
    out = text
    drop = _COMMA_STRIP.search(text) is not None
    for p in _VQA_PUNCT:
        out = out.replace(p, "" if drop or p + " " in text or " " + p in text else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """EvalAIAnswerProcessor.process_digit_article: number words, articles, contractions."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_normalize(text: str) -> str:
    """``EvalAIAnswerProcessor.__call__`` (used by lmms-eval's textvqa, ok_vqa, vizwiz_vqa)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def _vqav2_normalize(text: str) -> str:
    """tasks/vqav2/utils.py ``vqav2_process_results``: no word_tokenize step (commas, "'s")."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy_score(
    prediction: str, answers: Sequence[str], processor: Literal["evalai", "vqav2"] = "evalai"
) -> float:
    """One question: the mean over i of min(1, #(answers j != i equal to prediction) / 3)."""
    if not answers:
        raise ValueError("a VQA question without ground-truth answers")
    if processor not in ("evalai", "vqav2"):
        raise ValueError(f"unknown VQA answer processor {processor!r}")
    norm = vqa_normalize if processor == "evalai" else _vqav2_normalize
    pred = norm(prediction)
    hits = [norm(a) == pred for a in answers]
    total = sum(hits)
    return float(statistics.mean(min(1, float(total - hit) / 3) for hit in hits))


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    processor: Literal["evalai", "vqav2"] = "evalai",
) -> Metric:
    """VQA accuracy over the leave-one-out subsets of each question's answers (by position).

    ``processor="evalai"`` normalises with the full ``EvalAIAnswerProcessor`` like lmms-eval's
    textvqa/ok_vqa/vizwiz_vqa ``*_process_results``; ``"vqav2"`` like ``vqav2_process_results``
    (process_punctuation + process_digit_article only, always applied; the official VQA script
    applies them only when the answers are not all the same).
    """
    _same_length(predictions, answers, "answer lists")
    return mean_with_stderr(
        [vqa_accuracy_score(p, a, processor) for p, a in zip(predictions, answers, strict=True)]
    )


# ------------------------------------------------------------------ ANLS (DocVQA)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1 each)."""
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
    """lmms-eval api/metrics.py ``anls`` for one question (from the DocVQA/RRC script).

    Distance on ``" ".join(s.strip().lower().split())``, divided by the longer *raw* length
    (``len(s.upper())``); 1 - the smallest such NL over the golds, set to 0 when below
    ``threshold``. So NL == 0.5 scores 0.5 (the paper's ``NL < tau`` would give 0).
    """
    if not golds:
        raise ValueError("an ANLS question without gold answers")
    det = " ".join(prediction.strip().lower().split())
    distances = []
    for gold in golds:
        gt = " ".join(gold.strip().lower().split())
        length = max(len(gold.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else float(levenshtein(gt, det)) / float(length))
    score = 1 - min(distances)
    return 0.0 if score < threshold else score


def anls(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], threshold: float = 0.5
) -> Metric:
    _same_length(predictions, answers, "answer lists")
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
    """tasks/chartqa/utils.py ``relaxed_correctness`` (Pix2Struct/Qwen-VL's).

    Numbers ("x%" is x / 100, on either side) are right within ``max_relative_change`` of the
    target; a target that is 0 or not a number needs a case-insensitive exact string match.
    """
    pred, tgt = _to_float(prediction), _to_float(target)
    if pred is not None and tgt:  # tgt == 0.0 is falsy: compared as strings, as in lmms-eval
        return abs(pred - tgt) / abs(tgt) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(
    predictions: Sequence[str], targets: Sequence[str], max_relative_change: float = 0.05
) -> Metric:
    _same_length(predictions, targets, "targets")
    return mean_with_stderr(
        [
            float(relaxed_correctness(p, t, max_relative_change))
            for p, t in zip(predictions, targets, strict=True)
        ]
    )


# ------------------------------------------------------------------ token F1 (SQuAD)

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def _squad_tokens(text: str) -> list[str]:
    """SQuAD ``normalize_answer`` (lower, drop punctuation, drop articles, whitespace) split."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return _SQUAD_ARTICLES.sub(" ", text).split()


def f1_score(prediction: str, reference: str) -> float:
    """SQuAD v2 ``compute_f1``: if either side has no tokens, 1 when both have none, else 0."""
    pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(ref) & Counter(pred)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return (2 * precision * recall) / (precision + recall)


def token_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> Metric:
    """Per sample the best F1 over its references (SQuAD's ``metric_max_over_ground_truths``)."""
    _same_length(predictions, references)
    return mean_with_stderr(
        [
            max(f1_score(pred, r) for r in _options(ref))
            for pred, ref in zip(predictions, references, strict=True)
        ]
    )


def exact_match_score(
    prediction: str, references: str | Sequence[str], *, ignore_case: bool = True
) -> float:
    """One sample's ``exact_match`` (the default options above): 1.0 when any reference matches
    after lower-casing and stripping."""

    def norm(s: str) -> str:
        return (s.lower() if ignore_case else s).strip()

    return float(any(norm(prediction) == norm(r) for r in _options(references)))


def token_f1_score(prediction: str, references: str | Sequence[str]) -> float:
    """One sample's ``token_f1``: the best F1 over its references."""
    return max(f1_score(prediction, r) for r in _options(references))


# ------------------------------------------------------------------ the registry's entries


def builtin_metrics() -> tuple[Any, ...]:
    """orch's metrics, declared once (name, per-sample score, direction, the record fields they
    read). Each dataset kind declares which it reports; a dataset may list others its records
    support."""
    from orchestrator.contract.metrics import Metric as M

    def needs(*fields: str) -> frozenset[str]:
        return frozenset(fields)

    text = needs("prediction", "references")
    return (
        M("accuracy", lambda r: float(r["correct"]), True, needs("correct"),
          description="share of samples right (the argmax class; generated answers: exact match)"),
        M("loss", lambda r: float(r["loss"]), False, needs("loss"), description="mean loss"),
        M("top5_accuracy", lambda r: float(r["top5"]), True, needs("top5"),
          description="label among the 5 highest masked logits"),
        M("exact_match", lambda r: exact_match_score(r["prediction"], r["references"]), True,
          text, description="lmms-eval exact_match (case-insensitive, stripped)"),
        M("anls", lambda r: anls_score(r["prediction"], r["references"]), True, text,
          description="lmms-eval anls (DocVQA, InfoVQA), threshold 0.5"),
        M("relaxed_accuracy",
          lambda r: float(relaxed_correctness(r["prediction"], r["references"][0])), True, text,
          description="lmms-eval relaxed_correctness (ChartQA), 5 % tolerance"),
        M("token_f1", lambda r: token_f1_score(r["prediction"], r["references"]), True, text,
          description="SQuAD token F1, best over the references"),
        M("vqa_accuracy", lambda r: vqa_accuracy_score(r["prediction"], r["answers"]), True,
          needs("prediction", "answers"),
          description="VQAv2/TextVQA accuracy over the annotators' answers (EvalAI rules)"),
    )  # fmt: skip


def register_builtin_metrics() -> None:
    """Register orch's metrics in orchestrator.contract.metrics."""
    from orchestrator.contract.metrics import register_metric

    for metric in builtin_metrics():
        register_metric(metric)

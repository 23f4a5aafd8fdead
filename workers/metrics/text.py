"""Metrics over generated text against reference strings: exact match (lmms-eval's port of HF
``evaluate``), ANLS (DocVQA, InfoVQA), ChartQA's relaxed correctness and SQuAD's token F1."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from workers.metrics.base import Metric, as_references, mean_with_stderr, same_length

# ------------------------------------------------------------------ exact match

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DROP_DIGITS = str.maketrans("", "", string.digits)


def _numpy_strings(texts: Sequence[str]) -> list[str]:
    """What ``np.asarray`` of Python strings reads back: trailing NUL characters are padding."""
    return [t.rstrip("\x00") for t in texts]


def exact_match_hf_evaluate(
    predictions: Sequence[str],
    references: Sequence[str],
    regexes_to_ignore: Sequence[str] | None = None,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
) -> dict[str, float]:
    """lmms-eval api/metrics.py ``exact_match_hf_evaluate``, numpy's string semantics included.

    In order: every regex in ``regexes_to_ignore`` is deleted (``re.sub(s, "", x)``), then
    ``ignore_case`` lower-cases, ``ignore_punctuation`` deletes ``string.punctuation`` and
    ``ignore_numbers`` deletes the ASCII digits; the share of positions where prediction and
    reference are then equal. As with numpy's fixed-width arrays, trailing NUL characters do not
    count and lower-casing is cut to the width of the longest string of its list.
    """
    same_length(predictions, references)
    if not predictions:
        raise ValueError("no samples: a metric over nothing is undefined")
    preds, refs = list(predictions), list(references)
    widths = (max(len(p) for p in preds), max(len(r) for r in refs))
    if regexes_to_ignore is not None:
        for s in regexes_to_ignore:
            preds = [re.sub(s, "", x) for x in preds]
            refs = [re.sub(s, "", x) for x in refs]
            widths = (max(len(p) for p in preds), max(len(r) for r in refs))
            preds, refs = _numpy_strings(preds), _numpy_strings(refs)
    else:
        preds, refs = _numpy_strings(preds), _numpy_strings(refs)
    if ignore_case:
        # np.char.lower keeps the array's fixed width (its longest string, NULs included): a
        # lower case longer than its upper case ("İ" -> "i̇", two code points) is cut short.
        preds = [p.lower()[: widths[0]].rstrip("\x00") for p in preds]
        refs = [r.lower()[: widths[1]].rstrip("\x00") for r in refs]
    if ignore_punctuation:
        preds = _numpy_strings([p.translate(_DROP_PUNCTUATION) for p in preds])
        refs = _numpy_strings([r.translate(_DROP_PUNCTUATION) for r in refs])
    if ignore_numbers:
        preds = _numpy_strings([p.translate(_DROP_DIGITS) for p in preds])
        refs = _numpy_strings([r.translate(_DROP_DIGITS) for r in refs])
    hits = [p == r for p, r in zip(preds, refs, strict=True)]
    return {"exact_match": sum(hits) / len(hits)}


def _normalise_for_match(
    text: str,
    *,
    ignore_case: bool,
    ignore_punctuation: bool,
    ignore_numbers: bool,
    regexes_to_ignore: Sequence[str] | None,
    strip: bool,
) -> str:
    for s in regexes_to_ignore or ():
        text = re.sub(s, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_DROP_PUNCTUATION)
    if ignore_numbers:
        text = text.translate(_DROP_DIGITS)
    return text.strip() if strip else text


def exact_match(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    ignore_case: bool = True,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
    regexes_to_ignore: Sequence[str] | None = None,
    strip: bool = True,
) -> Metric:
    """lmms-eval's exact match over samples, a sample scoring 1 when any of its references
    matches (api/task.py ``process_results`` for ``multiple_target``).

    The options are ``exact_match_hf_evaluate``'s, applied in its order; ``strip`` (not in
    lmms-eval, whose task strips the prediction only) trims both sides after them, so
    ``strip=False, ignore_case=False`` is lmms-eval's default behaviour on a stripped prediction.
    Unlike numpy, lower-casing is never cut short (see ``exact_match_hf_evaluate``).
    """
    same_length(predictions, references)

    def norm(s: str) -> str:
        return _normalise_for_match(
            s,
            ignore_case=ignore_case,
            ignore_punctuation=ignore_punctuation,
            ignore_numbers=ignore_numbers,
            regexes_to_ignore=regexes_to_ignore,
            strip=strip,
        )

    return mean_with_stderr(
        [
            float(any(norm(pred) == norm(r) for r in as_references(ref)))
            for pred, ref in zip(predictions, references, strict=True)
        ]
    )


def exact_match_score(
    prediction: str, references: str | Sequence[str], *, ignore_case: bool = True
) -> float:
    """One sample's ``exact_match`` (the default options above): 1.0 when any reference matches
    after lower-casing and stripping.

    Divergence from lmms-eval (api/task.py strips the prediction, never the reference): the
    references are stripped too, else a reference with outer whitespace could never match."""

    def norm(s: str) -> str:
        return (s.lower() if ignore_case else s).strip()

    return float(any(norm(prediction) == norm(r) for r in as_references(references)))


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


levenshtein_distance = levenshtein  # lmms-eval's name (api/metrics.py)


def anls_score(prediction: str, golds: Sequence[str], threshold: float = 0.5) -> float:
    """lmms-eval api/metrics.py ``anls`` for one question (from the DocVQA/RRC script); lmms-eval's
    ``anls(references, [prediction])["anls"]`` is ``anls_score(prediction, references)``.

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
    same_length(predictions, answers, "answer lists")
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
    same_length(predictions, targets, "targets")
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
    same_length(predictions, references)
    return mean_with_stderr(
        [
            max(f1_score(pred, r) for r in as_references(ref))
            for pred, ref in zip(predictions, references, strict=True)
        ]
    )


def token_f1_score(prediction: str, references: str | Sequence[str]) -> float:
    """One sample's ``token_f1``: the best F1 over its references."""
    return max(f1_score(prediction, r) for r in as_references(references))

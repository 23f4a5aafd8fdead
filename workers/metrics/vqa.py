"""VQA accuracy as EvalAI computes it (VQAv2, TextVQA, OK-VQA, VizWiz): lmms-eval's
``EvalAIAnswerProcessor`` (tasks/_task_utils/vqa_eval_metric.py) and the leave-one-out rule of
tasks/textvqa/utils.py and tasks/vqav2/utils.py."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Literal

from workers.metrics.base import Metric, mean_with_stderr, same_length

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


class EvalAIAnswerProcessor:
    """lmms-eval's ``EvalAIAnswerProcessor`` (from MMF): ``word_tokenize``, then
    ``process_punctuation``, then ``process_digit_article``.

    lmms-eval's ``process_digit_article`` writes every word it sees into the class-level
    ``NUMBER_MAP`` (``setdefault(word, word)``); that changes no answer, and here nothing grows.
    """

    CONTRACTIONS = _CONTRACTIONS
    NUMBER_MAP = _NUMBERS
    ARTICLES = sorted(_ARTICLES)
    PUNCTUATIONS = _VQA_PUNCT

    def word_tokenize(self, word: str) -> str:
        word = word.lower()
        word = word.replace(",", "").replace("?", "").replace("'s", " 's")
        return word.strip()

    def process_punctuation(self, in_text: str) -> str:
        out = in_text
        drop = _COMMA_STRIP.search(in_text) is not None
        for p in _VQA_PUNCT:
            out = out.replace(p, "" if drop or p + " " in in_text or " " + p in in_text else " ")
        return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)

    def process_digit_article(self, in_text: str) -> str:
        """Number words to digits, articles dropped, then the contractions table."""
        words = [_NUMBERS.get(w, w) for w in in_text.lower().split()]
        return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)

    def __call__(self, item: str) -> str:
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        item = self.process_punctuation(item)
        return self.process_digit_article(item)


_PROCESSOR = EvalAIAnswerProcessor()


def vqa_normalize(text: str) -> str:
    """``EvalAIAnswerProcessor()(text)`` (lmms-eval's textvqa, ok_vqa, vizwiz_vqa)."""
    return _PROCESSOR(text)


def _vqav2_normalize(text: str) -> str:
    """tasks/vqav2/utils.py ``vqav2_process_results``: no word_tokenize step (commas, "'s")."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _PROCESSOR.process_digit_article(_PROCESSOR.process_punctuation(text))


def vqa_accuracy_score(
    prediction: str, answers: Sequence[str], processor: Literal["evalai", "vqav2"] = "evalai"
) -> float:
    """One question: the mean over i of min(1, #(answers j != i equal to prediction) / 3).

    ``"evalai"`` is tasks/textvqa/utils.py ``textvqa_process_results``, ``"vqav2"``
    tasks/vqav2/utils.py ``vqav2_process_results``, each on the prediction as api/task.py hands
    it over (stripped). VQAv2 leaves out the answers *equal* to the i-th answer dict; its dicts
    differ by ``answer_id``, so that is the i-th answer, by position, as here.
    """
    if not answers:
        raise ValueError("a VQA question without ground-truth answers")
    if processor not in ("evalai", "vqav2"):
        raise ValueError(f"unknown VQA answer processor {processor!r}; known: evalai, vqav2")
    norm = vqa_normalize if processor == "evalai" else _vqav2_normalize
    pred = norm(prediction.strip())
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
    same_length(predictions, answers, "answer lists")
    return mean_with_stderr(
        [vqa_accuracy_score(p, a, processor) for p, a in zip(predictions, answers, strict=True)]
    )

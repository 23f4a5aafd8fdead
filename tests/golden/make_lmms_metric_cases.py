"""Write tests/golden/lmms_metric_cases.jsonl: seeded, real-looking inputs and what lmms-eval
0.7.3's own scoring functions return on them (tests/test_lmms_metrics.py checks orch's metrics
against the table, and against a fresh table on a new seed when this venv exists).

Run with the lmms-eval venv (``make lmms``), never orch's::

    .venv-lmms/bin/python tests/golden/make_lmms_metric_cases.py [--seed 0] [--scale 1] [--out F]

Each line after the header is one case: ``{"key": "<kind>/<n>", "kind", "input", "expected"}``;
``expected`` holds lmms-eval's outputs by field. lmms-eval is called the way its tasks call it:
the prediction stripped first (api/task.py ``process_results``), then the task's
``process_results`` and aggregation functions on docs shaped like the benchmark's. Two things
are set here that lmms-eval leaves to its run: the global random state before a multiple-choice
parse (orch's per-sample seed, see workers/metrics/registry.py ``sample_rng``), and OCRBench's
module-level totals (reset before each aggregation but one, which shows the double count).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import logging
import random
import re
import string
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("make_lmms_metric_cases")
OUT = Path(__file__).with_name("lmms_metric_cases.jsonl")

Case = dict[str, Any]


def import_lmms() -> types.SimpleNamespace:
    """lmms-eval's scoring modules. PyPI's torchvision (a CUDA build) fails to import beside
    torch 2.13.0+cpu (shared/STACK.md); marked absent, transformers never imports it."""
    sys.modules["torchvision"] = None  # type: ignore[assignment]
    warnings.filterwarnings("ignore")
    from loguru import logger as loguru_logger

    loguru_logger.remove()
    import lmms_eval.api.metrics as metrics
    import lmms_eval.tasks._task_utils.mcq_extract as mcq_extract
    import lmms_eval.tasks._task_utils.vqa_eval_metric as vqa_eval_metric
    import lmms_eval.tasks.chartqa.utils as chartqa
    import lmms_eval.tasks.mmbench.en_utils as mmbench
    import lmms_eval.tasks.mme.utils as mme
    import lmms_eval.tasks.mmmu.utils as mmmu
    import lmms_eval.tasks.mmsearch.score.f1_score as f1_score
    import lmms_eval.tasks.mmstar.utils as mmstar
    import lmms_eval.tasks.ocrbench.utils as ocrbench
    import lmms_eval.tasks.scienceqa.utils as scienceqa
    import lmms_eval.tasks.textvqa.utils as textvqa
    import lmms_eval.tasks.vqav2.utils as vqav2

    return types.SimpleNamespace(
        metrics=metrics,
        mcq_extract=mcq_extract,
        vqa_eval_metric=vqa_eval_metric,
        chartqa=chartqa,
        mmbench=mmbench,
        mme=mme,
        mmmu=mmmu,
        f1_score=f1_score,
        mmstar=mmstar,
        ocrbench=ocrbench,
        scienceqa=scienceqa,
        textvqa=textvqa,
        vqav2=vqav2,
    )


# ------------------------------------------------------------------ real-looking text

# fmt: off
OBJECTS = ["dog", "cat", "car", "bus", "man", "woman", "tree", "sign", "table", "pizza",
           "umbrella", "bicycle", "train", "clock", "phone", "laptop", "horse", "bird", "boat"]
COLORS = ["red", "blue", "green", "white", "black", "yellow", "brown", "gray", "orange"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "none"]
SPECIAL = ["new york", "st. louis", "washington d.c.", "u.s.a.", "coca-cola", "wi-fi",
           "t-shirt", "x-ray", "e-mail", "7-eleven", "mcdonald's", "at&t", "man's hat",
           "dont", "don't", "cant", "can't", "isnt", "its", "it's", "im", "wont", "thats",
           "youre", "whats", "10:30", "12:00 pm", "oclock", "3 o'clock", "1,000", "1000",
           "3.5", ".5", "25%", "$5", "$1,234.56", "1/2", "10 cm", "100 meters", "yes", "no",
           "left", "right", "kitchen", "tennis", "frisbee", "nike", "stop", "one way",
           "2:45", "pepperoni", "hot dog", "fire hydrant", "ice cream", "a-b", "(a)", "[b]",
           "on the table", "in the sky", "it's raining", "they're", "somebody'd", "yall",
           "the  cat", "a.m.", "no.", "yes!", "i don't know", "2011", "1,234,567", "5.00"]
WEIRD = ["İstanbul", "Straße", "ΟΔΟΣ", "café", "naïve", "Ｔｅｘｔ", "ﬁne", "ǅemal"]
PREFIXES = ["The answer is ", "It is ", "Answer: ", "I think it's ", "There are ", "It's a "]
DOC_ANSWERS = ["Invoice No. 4521", "12/03/1998", "$1,234.56", "John Smith", "ACME Corporation",
               "Page 3", "0.75%", "Table 2", "Dr. Jane Doe", "P.O. Box 1234", "March 5, 2001",
               "(555) 123-4567", "TOTAL", "Research and Development", "2.5 mg", "Q3 2019",
               "Board of Directors", "ITC Limited", "1990-91", "Brown & Williamson"]
# fmt: on


def vqa_answer(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.2:
        return rng.choice(OBJECTS)
    if r < 0.3:
        return f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"
    if r < 0.45:
        return rng.choice(NUMBER_WORDS) if rng.random() < 0.5 else str(rng.randint(0, 30))
    if r < 0.55:
        return f"{rng.choice(NUMBER_WORDS[1:6])} {rng.choice(OBJECTS)}s"
    return rng.choice(SPECIAL)


def perturb(rng: random.Random, text: str, max_steps: int = 3) -> str:
    """Zero to ``max_steps`` of the edits a model's answer differs from an annotator's by."""
    steps: list[Callable[[str], str]] = [
        str.upper,
        str.capitalize,
        str.title,
        lambda s: rng.choice(["the ", "a ", "an ", "The ", "A "]) + s,
        lambda s: s + rng.choice([".", "!", "?", ",", "...", " .", ";"]),
        lambda s: rng.choice([" ", "  ", "\n", "\t", ""]) + s + rng.choice([" ", "\n", " \n", ""]),
        lambda s: " ".join(
            str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS[:11] else w for w in s.split()
        ),
        lambda s: " ".join(
            NUMBER_WORDS[int(w)] if w.isdigit() and int(w) <= 10 else w for w in s.split()
        ),
        lambda s: s.replace(",", "") if "," in s else re.sub(r"(\d)(\d{3})\b", r"\1,\2", s),
        lambda s: s.replace("-", rng.choice([" ", "", " - "])),
        lambda s: s.replace("'", ""),
        lambda s: s + "'s",
        lambda s: rng.choice(['"{}"', "({})", "'{}'", "[{}]", "*{}*"]).format(s),
        lambda s: rng.choice(PREFIXES) + s,
        lambda s: s.replace(" ", "  "),
        lambda s: s.replace(" ", ","),
        lambda s: vqa_answer(rng),
        lambda s: s + "s",
        lambda s: s[:-1] if len(s) > 2 else s,
        lambda s: s.replace(".", ""),
        lambda s: rng.choice(WEIRD) if rng.random() < 0.3 else s,
    ]
    for _ in range(rng.randint(0, max_steps)):
        text = rng.choice(steps)(text)
    return text


def edit(rng: random.Random, text: str, k: int) -> str:
    """``k`` random character edits (insert, delete, substitute)."""
    chars = list(text)
    alphabet = string.ascii_letters + string.digits + " .,-$"
    for _ in range(k):
        op = rng.choice("ids") if chars else "i"
        pos = rng.randrange(len(chars) + (op == "i")) if chars or op == "i" else 0
        if op == "i":
            chars.insert(pos, rng.choice(alphabet))
        elif op == "d":
            del chars[pos]
        else:
            chars[pos] = rng.choice(alphabet)
    return "".join(chars)


# ------------------------------------------------------------------ choice predictions

# fmt: off
OPTION_TEXTS = ["A cat", "A dog", "Paris", "London", "3.5 cm", "7", "increases", "decreases",
                "stays the same", "red", "blue", "The man is running", "photosynthesis",
                "mitochondria", "north", "south", "1,000", "None of the above",
                "All of the above", "x = 2", "$12", "Yes", "No", "carbon dioxide", "oxygen",
                "a", "B", "Both A and B", "the left one", "12", "1.2", "in the kitchen",
                "Impressionism", "Baroque", "sunny", "cloudy", "2", "20%", "Canada", "Brazil"]
REASONS = ["the image shows it clearly", "of the shadow on the left", "it is the only option",
           "the graph goes up", "A is too small", "the label says so"]
# fmt: on


def choice_prediction(rng: random.Random, options: Sequence[str], answer: str) -> str:
    letters = [chr(65 + i) for i in range(len(options))]
    pick = answer if rng.random() < 0.55 else rng.choice(letters)
    other = rng.choice(letters)
    text = options[letters.index(pick)]
    # fmt: off
    templates = [
        "{L}", "({L})", "{L}.", "{L})", "{L}:", "{l}", "The answer is {L}.", "The answer is ({L}).",
        "Answer: {L}", "Answer: ({L}) {T}", "{L}. {T}", "({L}) {T}", "{T}", "{T}.",
        "I think the answer is {T}.", "The correct option is {L} because {R}.", "Option {L}",
        "**{L}**", "\\boxed{{{L}}}", "{L}\n", "'{L}'", '"{L}"', "{L} or {M}",
        "Between ({L}) and ({M}), ({M}) is correct.", "I don't know.", "", "None of these.",
        "A {O} is shown, so the answer is {L}.", "It is {T}, which corresponds to option {L}.",
        "First, consider {M}. {M} is wrong. So {L}.", "{L}, {T}", "答案是{L}",
        "The image shows a {O}. Therefore, the answer is {T}.", "the answer is {l}", "{L}{M}",
        "{L} {M}", "Looking at the picture carefully, it has to be {T}", "I choose {L}",
        "My answer is: {L}", "{L}: {T}", " {L} ", "The answer is {L} because {R}.",
        "Since {R}, I pick ({L})", "Final answer: {L}", "{T} ({L})", "It's {M}... no, {L}.",
        "The correct answer is {T} and not {U}.", "A", "Answer {L}", "{L}) {T}",
    ]
    # fmt: on
    return rng.choice(templates).format(
        L=pick,
        l=pick.lower(),
        M=other,
        T=text,
        R=rng.choice(REASONS),
        O=rng.choice(OBJECTS),
        U=rng.choice(options),
    )


def choice_options(rng: random.Random, low: int = 2, high: int = 6) -> list[str]:
    return rng.sample(OPTION_TEXTS, rng.randint(low, high))


def orch_seed(record: dict[str, Any]) -> str:
    """workers/metrics/registry.py ``sample_rng``'s seed (kept in step by the tests)."""
    if "id" in record:
        return f"orch-mcq:{record['id']}"
    return "orch-mcq:" + "\x1f".join([record["prediction"], *record["options"]])


# fmt: off
# Hand-picked edge inputs (Cases.edges), each with what it probes.
EDGE_EXACT_MATCH = [
    ("İ", ["i̇"]),  # numpy cuts "İ".lower() (two code points) to one: lmms-eval 0, orch 1
    ("yes", ["yes "]),  # a reference with a trailing space: lmms-eval 0, orch 1
    (" Yes ", ["yes"]),  # the prediction is stripped, then lower-cased
    ("Yes.", ["yes"]),  # punctuation counts
    ("STRASSE", ["straße"]),  # lower() does not fold ß
]
EDGE_ANLS = [
    ("abcdef", ["abcxyz"]),  # NL exactly 0.5: kept
    ("abcdef", ["abxxyz"]),  # NL 4/6: zeroed
    ("", [""]),  # both empty
    ("a", [""]),
    ("ß", ["ss"]),  # the length is len(s.upper()): "SS", 2
    ("  Hello   World ", ["nope", "hello world"]),
    ("a  b", ["a b"]),
]
EDGE_RELAXED = [
    ("10.5", "10"), ("9.5", "10"), ("12.6%", "12%"), ("0", "0"), ("0.0", "0"), ("1e1", "10"),
    (" 12 ", "12"), ("nan", "nan"), ("inf", "inf"), ("1_000", "1000"), ("-10.4", "-10"),
    ("45", "45%"), ("45%", "0.45"), ("5.25", "5"), ("Yes", "yes"), ("1,234", "1234"),
]
EDGE_VQA = [
    ("Two dogs.", ["2 dogs"] * 2 + ["two dogs"] + ["dogs"] * 7),
    ("red,blue", ["red blue"] * 3 + ["redblue"] * 2 + ["purple"] * 5),
    ("1,000", ["1000"] * 2 + ["1,000"] * 2 + ["one thousand"] * 6),
    ("The man's hat", ["mans hat"] * 2 + ["man's hat"] * 3 + ["hat"] * 5),
    ("x-ray", ["x ray"] * 4 + ["xray"] * 6),
    ("3.5.", ["3.5"] * 10),
]
EDGE_MCQ = [
    ("A B", ["cat", "dog"], "B"),  # two bare letters: " A " and " B ", the later wins
    ("(A) or (B)", ["cat", "dog"], "A"),
    ("B. C.", ["cat", "dog", "cow"], "C"),  # the final "." goes first, so "C " is a bare letter
    ("I think it is the dog and not the cat", ["cat", "dog"], "B"),  # option texts, > 5 words
    ("dog", ["cat", "dog"], "B"),  # option text in <= 5 words: a guess
    ("", ["cat", "dog", "cow"], "A"),  # nothing: a guess
]
EDGE_MME = [("Not sure", "No"), ("nope", "No"), ("Y", "Yes"), ("", "No"), ("No.", "No"),
            ("yes, no", "Yes"), ("Yeah", "Yes")]
# fmt: on


# Each OCRBench category's source datasets, and its size (50 unless listed).
# fmt: off
OCR_DATASETS = {
    "Regular Text Recognition": ["IIIT5K", "SVT", "IC13_857"],
    "Irregular Text Recognition": ["IC15_1811", "SVTP", "CT80", "COCOText", "CTW", "TotalText"],
    "Artistic Text Recognition": ["WordArt"],
    "Handwriting Recognition": ["IAM"],
    "Digit String Recognition": ["ReCTS"],
    "Non-Semantic Text Recognition": ["HOST", "WOST"],
    "Scene Text-centric VQA": ["textVQA", "STVQA", "ESTVQA"],
    "Doc-oriented VQA": ["docVQA", "infographicVQA", "ChartQA"],
    "Key Information Extraction": ["FUNSD", "SROIE", "POIE"],
    "Handwritten Mathematical Expression Recognition": ["HME100k"],
}
OCR_SIZES = {"Scene Text-centric VQA": 200, "Doc-oriented VQA": 200,
             "Key Information Extraction": 200,
             "Handwritten Mathematical Expression Recognition": 100}
# fmt: on


# ------------------------------------------------------------------ the cases, kind by kind


class Cases:
    def __init__(self, lm: types.SimpleNamespace, seed: int, scale: float, tmp: Path) -> None:
        self.lm, self.rng, self.scale, self.tmp = lm, random.Random(seed), scale, tmp
        self.cases: list[Case] = []
        self.counts: dict[str, int] = {}

    def n(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def add(self, kind: str, inp: dict[str, Any], expected: dict[str, Any]) -> None:
        i = self.counts.get(kind, 0)
        self.counts[kind] = i + 1
        self.cases.append(
            {"key": f"{kind}/{i:05d}", "kind": kind, "input": inp, "expected": expected}
        )

    @property
    def args(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(output_path=str(self.tmp))

    # ---------------------------------------------------------------- edges, by hand

    def edges(self) -> None:
        """Inputs at the rules' edges, written by hand; first of their kinds, so their keys
        (kind/00000 ...) are the same in every table."""
        for pred, refs in EDGE_EXACT_MATCH:
            self.add_exact_match(pred, refs)
        for pred, golds in EDGE_ANLS:
            self.add_anls(pred, golds)
        for pred, target in EDGE_RELAXED:
            self.add_relaxed(pred, target)
        for pred, answers in EDGE_VQA:
            self.add_textvqa(pred, answers)
            self.add_vqav2(pred, answers)
        for pred, options, answer in EDGE_MCQ:
            self.add_mcq({"prediction": pred, "options": options, "answer": answer})
        for pred, answer in EDGE_MME:
            self.add_mme_score(pred, answer)

    # ---------------------------------------------------------------- text and VQA

    def evalai_tables(self) -> None:
        """The processor's tables, before any call: ``process_digit_article`` writes every word
        it sees into the class-level NUMBER_MAP."""
        p = self.lm.vqa_eval_metric.EvalAIAnswerProcessor
        self.add(
            "evalai_tables",
            {},
            {
                "CONTRACTIONS": dict(p.CONTRACTIONS),
                "NUMBER_MAP": dict(p.NUMBER_MAP),
                "ARTICLES": list(p.ARTICLES),
                "PUNCTUATIONS": list(p.PUNCTUATIONS),
            },
        )

    def evalai(self) -> None:
        proc = self.lm.vqa_eval_metric.EvalAIAnswerProcessor()
        for _ in range(self.n(600)):
            text = perturb(self.rng, vqa_answer(self.rng), 4)
            self.add("evalai_processor", {"text": text}, {"processed": proc(text)})

    def ten_answers(self) -> tuple[str, list[str]]:
        rng = self.rng
        base = vqa_answer(rng)
        matches = rng.choice([0, 1, 2, 3, 4, 5, 10, rng.randint(0, 10)])
        answers = [perturb(rng, base, 1) if rng.random() < 0.3 else base for _ in range(matches)]
        answers += [vqa_answer(rng) for _ in range(10 - matches)]
        rng.shuffle(answers)
        pred = perturb(rng, base, 3) if rng.random() < 0.8 else vqa_answer(rng)
        return pred, answers

    def vqa(self) -> None:
        for _ in range(self.n(500)):
            self.add_textvqa(*self.ten_answers())
        for _ in range(self.n(500)):
            self.add_vqav2(*self.ten_answers())

    def add_textvqa(self, pred: str, answers: list[str]) -> None:
        doc = {"answers": list(answers), "question_id": 1}
        out = self.lm.textvqa.textvqa_process_results(doc, [pred.strip()])
        self.add(
            "vqa_accuracy",
            {"prediction": pred, "references": answers},
            {"score": out["exact_match"]},
        )

    def add_vqav2(self, pred: str, answers: list[str]) -> None:
        # VQAv2's answers are dicts, each with its own answer_id
        dicts = [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
            for i, a in enumerate(answers)
        ]
        out = self.lm.vqav2.vqav2_process_results(
            {"answers": dicts, "question_id": 1}, [pred.strip()]
        )
        self.add(
            "vqav2_accuracy",
            {"prediction": pred, "references": answers},
            {"score": out["exact_match"]},
        )

    def exact_match(self) -> None:
        rng, em = self.rng, self.lm.metrics.exact_match_hf_evaluate
        for _ in range(self.n(400)):
            refs = [vqa_answer(rng) for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.1:
                refs[0] = rng.choice([" ", "\n", ""]) + refs[0] + rng.choice([" ", "\n"])
            if rng.random() < 0.03:
                refs[0] = rng.choice(WEIRD)
            self.add_exact_match(perturb(rng, rng.choice(refs), 2), refs)
        regexes = [r"\s+", r"^the ", r"[,.]", r"\$", r"(?i)answer:\s*", r"\.$", r"\d", r"'s\b"]
        for _ in range(self.n(500)):
            k = rng.randint(1, 3)
            refs = [perturb(rng, vqa_answer(rng), 1) for _ in range(k)]
            preds = [perturb(rng, r, 2) for r in refs]
            if rng.random() < 0.02:
                preds[0] += "\x00"
            opts: dict[str, Any] = {
                "regexes_to_ignore": rng.sample(regexes, rng.randint(1, 3))
                if rng.random() < 0.4
                else None,
                "ignore_case": rng.random() < 0.6,
                "ignore_punctuation": rng.random() < 0.5,
                "ignore_numbers": rng.random() < 0.2,
            }
            value = float(em(predictions=preds, references=refs, **opts)["exact_match"])
            self.add(
                "exact_match_hf_evaluate",
                {"predictions": preds, "references": refs, **opts},
                {"exact_match": value},
            )

    def add_exact_match(self, pred: str, refs: list[str]) -> None:
        em = self.lm.metrics.exact_match_hf_evaluate
        # api/task.py, multiple targets: any reference matching the stripped prediction
        hits = [
            em(references=[g], predictions=[pred.strip()], ignore_case=True)["exact_match"]
            for g in refs
        ]
        self.add(
            "exact_match", {"prediction": pred, "references": refs}, {"score": float(any(hits))}
        )

    def add_anls(self, pred: str, golds: list[str]) -> None:
        value = self.lm.metrics.anls(references=golds, predictions=[pred.strip()])["anls"]
        self.add("anls", {"prediction": pred, "references": golds}, {"score": float(value)})

    def anls(self) -> None:
        rng = self.rng
        for _ in range(self.n(500)):
            golds = rng.sample(DOC_ANSWERS, rng.randint(1, 3))
            if rng.random() < 0.2:
                golds.append(perturb(rng, golds[0], 1))
            base = rng.choice(golds)
            r = rng.random()
            if r < 0.5:  # near the 0.5 threshold
                pred = edit(rng, base, max(0, round(len(base) * rng.uniform(0.35, 0.65))))
            elif r < 0.8:
                pred = perturb(rng, base, 2)
            elif r < 0.9:
                pred = rng.choice(["", " ", base.upper(), "  " + base.lower() + "  "])
            else:
                pred = rng.choice(DOC_ANSWERS)
            self.add_anls(pred, golds)

    def relaxed(self) -> None:
        rng = self.rng
        for _ in range(self.n(600)):
            r = rng.random()
            if r < 0.55:
                x = rng.choice(
                    [rng.randint(-50, 2000), round(rng.uniform(0, 100), rng.randint(1, 3))]
                )
                target = str(x) + ("%" if rng.random() < 0.25 else "")
            elif r < 0.65:
                target = rng.choice(["0", "0.0", "0%", "100", "1e3", "-5", "nan", "inf"])
            else:
                target = rng.choice(
                    ["Yes", "No", "Democrats", "2019", "Asia", "Male", "blue", "1,234", "45 %"]
                )
            value = re.sub(r"[%\s]", "", target)
            try:
                t = float(value)
                e = rng.choice([0.0, 0.05, -0.05, 0.0499, 0.0501, rng.uniform(-0.08, 0.08)])
                num = t * (1 + e) * rng.choice([1, 1, 1, 100, 0.01])
                fmt = rng.choice(["{:g}", "{:.1f}", "{:.2f}", "{:.0f}", "{}", "{:,.2f}", "{:.4g}"])
                pred = fmt.format(num) + rng.choice(["", "", "%", " %", " million", ""])
            except ValueError:
                pred = perturb(rng, target, 1)
            self.add_relaxed(rng.choice(["", "", " ", "\n"]) + pred, target)

    def add_relaxed(self, pred: str, target: str) -> None:
        doc = {"answer": target, "type": "human_test"}
        out = self.lm.chartqa.chartqa_process_results(doc, [pred.strip()])
        self.add(
            "relaxed_accuracy",
            {"prediction": pred, "references": [target]},
            {"score": out["relaxed_overall"]},
        )

    def token_f1(self) -> None:
        for _ in range(self.n(200)):
            ref = " ".join(vqa_answer(self.rng) for _ in range(self.rng.randint(1, 3)))
            pred = perturb(self.rng, ref, 3)
            value = self.lm.f1_score.get_f1_score(pred, ref)
            self.add("token_f1", {"prediction": pred, "reference": ref}, {"f1": float(value)})

    # ---------------------------------------------------------------- multiple choice

    def mcq(self) -> None:
        rng = self.rng
        for i in range(self.n(600)):
            options = choice_options(rng, 2, 9 if rng.random() < 0.1 else 6)
            answer = chr(65 + rng.randrange(len(options)))
            record: dict[str, Any] = {
                "prediction": choice_prediction(rng, options, answer),
                "options": options,
                "answer": answer,
            }
            if rng.random() < 0.5:
                record["id"] = f"q{i}"
            self.add_mcq(record)
        ex = self.lm.mcq_extract.extract_mcq_answer
        for _ in range(self.n(400)):
            options = choice_options(rng, 2, 8)
            pred = choice_prediction(rng, options, chr(65 + rng.randrange(len(options))))
            choices = rng.choice(
                [None, ["A", "B", "C", "D"], [chr(65 + j) for j in range(len(options))]]
            )
            self.add(
                "extract_mcq_answer",
                {"response": pred, "choices": choices},
                {"letter": ex(pred, choices=choices)},
            )

    def add_mcq(self, record: dict[str, Any]) -> None:
        mm = self.lm.mmmu
        index2ans, all_choices = mm.get_multi_choice_info(record["options"])
        random.seed(orch_seed(record))  # the random state a guess is drawn from
        parsed = mm.parse_multi_choice_response(
            record["prediction"].strip(), all_choices, index2ans
        )
        score = float(mm.eval_multi_choice(record["answer"], parsed))
        self.add("mcq_accuracy", record, {"parsed": parsed, "score": score})

    def mmmu_record(self, i: int, subject: str) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.6:
            options = choice_options(rng, 2, 7)
            answer = chr(65 + rng.randrange(len(options)))
            pred = choice_prediction(rng, options, answer)
            return {
                "id": f"validation_{subject}_{i}",
                "question_type": "multiple-choice",
                "options": options,
                "answer": answer,
                "prediction": pred,
            }
        answer_choice = rng.choice(
            [
                "3.5",
                "24",
                "1,200",
                "0.25",
                "-4",
                "1.5e3",
                "12.50",
                "7",
                "photosynthesis",
                "Paris",
                "a",
                "B",
                "x",
                "2/3",
                "45%",
            ]
        )
        gold: str | list[str] = answer_choice
        if rng.random() < 0.1:
            gold = [answer_choice, rng.choice(["3.50", "twenty-four", "1200"])]
        templates = [
            "The answer is {A}.",
            "{A}",
            "So the total is {A} dollars.",
            "x = {A}",
            "Therefore, the final answer is {A}",
            "It is approximately {A}",
            "The process is called {A}.",
            "Step 1: compute.\nSo the answer is {A}",
            "The result is {A}. Thus it is {B}",
            "I am not sure",
            "= {A}",
            "{A} meters",
            "Final answer: {A}.",
            "The value could be {B} or {A}",
            "The answer is {B}",
            "{B}",
        ]
        other = rng.choice(["3.49", "24.0", "1200", "0.3", "4", "1500", "12.5", "seven", "P", "b"])
        pred = rng.choice(templates).format(A=perturb(rng, answer_choice, 1), B=other)
        return {
            "id": f"validation_{subject}_{i}",
            "question_type": "open",
            "options": [],
            "answer": gold,
            "prediction": pred,
        }

    def mmmu_expected(self, record: dict[str, Any]) -> dict[str, Any]:
        doc = {**record, "options": str(record["options"])}
        random.seed(orch_seed(record))
        return self.lm.mmmu.mmmu_process_results(doc, [record["prediction"].strip()])["mmmu_acc"]

    def mmmu(self) -> None:
        subjects = [
            "Art",
            "Art_Theory",
            "Accounting",
            "Math",
            "Physics",
            "Clinical_Medicine",
            "Computer_Science",
            "History",
            "Music",
            "Public_Health",
        ]
        for i in range(self.n(600)):
            record = self.mmmu_record(i, self.rng.choice(subjects))
            acc = self.mmmu_expected(record)
            _, metric = self.lm.mmmu.evaluate_mmmu([acc])
            expected = {"parsed": canonical_open(acc["parsed_pred"][0]), "score": metric["acc"]}
            if record["question_type"] == "open":  # also as a vqa record: mmmu_open_accuracy
                expected["open_score"] = metric["acc"]
            self.add("mmmu_accuracy", record, expected)
        for _ in range(self.n(10)):
            chosen = self.rng.sample(subjects, self.rng.randint(1, 6))
            records = [
                self.mmmu_record(i, self.rng.choice(chosen))
                for i in range(self.rng.randint(10, 90))
            ]
            results = [self.mmmu_expected(r) for r in records]
            with contextlib.redirect_stdout(io.StringIO()):
                value = self.lm.mmmu.mmmu_aggregate_results(results)
            self.add(
                "mmmu_aggregate",
                {"records": records},
                {"mmmu_aggregate_results": value, "mmmu_accuracy": value},
            )

    def mmbench_doc(
        self, index: int, options: Sequence[str | None], answer: str, pred: str
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "index": index,
            "question": "Which one is shown?",
            "answer": answer,
            "hint": None,
            "source": "generated",
            "split": "dev",
            "category": "recognition",
            "L2-category": "perception",
        }
        for letter, opt in zip("ABCD", [*options, None, None, None, None], strict=False):
            doc[letter] = opt  # present in every row, None when missing (as a HF column)
        return self.lm.mmbench.mmbench_process_results(doc, [pred.strip()])["gpt_eval_score"]

    def mmbench_static(self, results: list[dict[str, Any]]) -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            return float(self.lm.mmbench.mmbench_aggregate_dev_results_static(results, self.args))

    def mmbench(self) -> None:
        rng, ev = self.rng, self.lm.mmbench.mmbench_evaluator
        for i in range(self.n(500)):
            options = choice_options(rng, 2, 4)
            answer = chr(65 + rng.randrange(len(options)))
            pred = choice_prediction(rng, options, answer)
            if rng.random() < 0.1:
                pred = f"A {rng.choice(OBJECTS)} is next to the {rng.choice(OBJECTS)}, so {answer}"
            choices = {letter: opt for letter, opt in zip("ABCD", options, strict=False)}
            inferred = ev.can_infer(pred.strip(), dict(choices))
            hit = self.mmbench_static([self.mmbench_doc(i, options, answer, pred)])
            self.add(
                "mmbench_row",
                {"index": i, "prediction": pred, "options": options, "answer": answer},
                {"can_infer": inferred, "hit_percent": hit},
            )
        for _ in range(self.n(10)):
            records, results = [], []
            for q in range(rng.randint(5, 30)):
                options = choice_options(rng, 2, 4)
                answer_text = rng.choice(options)
                for turn in range(rng.randint(1, len(options))):
                    rotated = options[turn:] + options[:turn]
                    answer = chr(65 + rotated.index(answer_text))
                    pred = choice_prediction(rng, rotated, answer)
                    index = q + turn * 1_000_000
                    records.append(
                        {"index": index, "prediction": pred, "options": rotated, "answer": answer}
                    )
                    results.append(self.mmbench_doc(index, rotated, answer, pred))
            percent = self.mmbench_static(results)
            # percent_by_group: the same records grouped by the mcq kind's group (base index)
            expected = {"percent": percent, "percent_by_group": percent}
            self.add("mmbench_aggregate", {"records": records}, expected)

    def mmstar(self) -> None:
        rng, ms = self.rng, self.lm.mmstar
        l2 = [c for cs in ms.eval_type_dict.values() for c in cs]

        def one() -> tuple[dict[str, Any], dict[str, Any]]:
            options = choice_options(rng, 4, 4)
            answer = rng.choice("ABCD")
            record = {
                "prediction": choice_prediction(rng, options, answer),
                "options": options,
                "answer": rng.choice([answer, answer.lower(), f" {answer} "]),
                "category": rng.choice(l2),
            }
            doc = {
                "answer": record["answer"],
                "category": "math",
                "l2_category": record["category"],
                "index": 0,
            }
            return record, ms.mmstar_process_results(doc, [record["prediction"].strip()])

        for _ in range(self.n(300)):
            record, out = one()
            self.add("mmstar", record, {"score": out["average"]["score"]})
        for _ in range(self.n(8)):
            pairs = [one() for _ in range(rng.randint(10, 80))]
            value = ms.mmstar_aggregate_results([out["average"] for _, out in pairs])
            self.add("mmstar_aggregate", {"records": [r for r, _ in pairs]}, {"average": value})

    def scienceqa(self) -> None:
        rng = self.rng
        for _ in range(self.n(300)):
            options = choice_options(rng, 2, 5)
            idx = rng.randrange(len(options))
            pred = choice_prediction(rng, options, chr(65 + idx))
            out = self.lm.scienceqa.sqa_process_results(
                {"choices": options, "answer": idx}, [pred.strip()]
            )
            self.add(
                "scienceqa",
                {"prediction": pred, "answer": chr(65 + idx)},
                {"score": out["exact_match"]},
            )

    # ---------------------------------------------------------------- OCRBench and MME

    def ocr_record(self, category: str) -> dict[str, Any]:
        rng = self.rng
        dataset = rng.choice(OCR_DATASETS[category])
        if dataset == "HME100k":
            golds = [
                rng.choice(
                    [
                        "\\frac { 1 } { 2 }",
                        "x ^ { 2 } + 1",
                        "a + b = c",
                        "\\sqrt { 3 }",
                        "2 \\times 3",
                        "y = k x + b",
                    ]
                )
            ]
            pred = rng.choice(
                [
                    golds[0],
                    golds[0].replace(" ", ""),
                    f"$${golds[0]}$$",
                    golds[0].upper(),
                    "x^2",
                    golds[0] + "\n",
                ]
            )
        else:
            golds = [
                rng.choice(
                    [
                        "STOP",
                        "Coca-Cola",
                        "2019",
                        "CENTRAL PARK",
                        "$12.50",
                        "ＡＢＣ１２３",
                        "Total",
                        "Main St.",
                        "hello world",
                        "06/12/2011",
                        "ACME Inc.",
                        "7-ELEVEN",
                        "Ｔｏｋｙｏ　Ｔｏｗｅｒ",
                    ]
                )
                for _ in range(rng.randint(1, 3))
            ]
            g = rng.choice(golds)
            pred = rng.choice(
                [
                    g,
                    g.lower(),
                    f'The text reads "{g}".',
                    g.replace(" ", ""),
                    g.replace(" ", "\n"),
                    perturb(rng, g, 2),
                    "I cannot read it",
                    f"{g}\n{g}",
                    edit(rng, g, 1),
                ]
            )
        refs: str | list[str] = golds if rng.random() < 0.8 else golds[0]
        return {"prediction": pred, "references": refs, "category": category, "dataset": dataset}

    def ocrbench_results(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            self.lm.ocrbench.ocrbench_process_results(
                {
                    "answer": r["references"],
                    "dataset": r["dataset"],
                    "question_type": r["category"],
                },
                [r["prediction"].strip()],
            )["ocrbench_accuracy"]
            for r in records
        ]

    def ocrbench(self) -> None:
        rng, ocr = self.rng, self.lm.ocrbench
        for _ in range(self.n(500)):
            record = self.ocr_record(rng.choice(list(OCR_DATASETS)))
            if rng.random() < 0.3:
                record.pop("dataset")  # orch infers the rule from the category
                out = self.ocrbench_results(
                    [{**record, "dataset": OCR_DATASETS[record["category"]][0]}]
                )
            else:
                out = self.ocrbench_results([record])
            self.add("ocrbench_accuracy", record, {"score": out[0]["score"]})
        sizes: list[int | str] = [1000, "again", 57, 200, 12]
        for size in sizes:
            again = size == "again"
            if size in (1000, "again"):
                records = [
                    self.ocr_record(c) for c in OCR_DATASETS for _ in range(OCR_SIZES.get(c, 50))
                ]
            else:
                records = [
                    self.ocr_record(rng.choice(list(OCR_DATASETS))) for _ in range(int(size))
                ]
            for r in records:
                r.pop("dataset")
            if not again:
                for k in ocr.OCRBench_score:
                    ocr.OCRBench_score[k] = 0
            results = self.ocrbench_results(
                [{**r, "dataset": OCR_DATASETS[r["category"]][0]} for r in records]
            )
            with contextlib.redirect_stdout(io.StringIO()):
                value = ocr.ocrbench_aggregate_accuracy(results, self.args)
            totals = read_ocrbench_totals(self.tmp / "results" / "ocrbench_results.txt")
            self.add(
                "ocrbench_aggregate",
                {"records": records, "after_another_aggregation": again},
                {"ocrbench_scores": totals, "ocrbench_accuracy": value},
            )

    def mme_pred(self, answer: str) -> str:
        rng = self.rng
        right = answer if rng.random() < 0.7 else {"Yes": "No", "No": "Yes"}[answer]
        return rng.choice(
            [
                right,
                right.lower(),
                right.upper(),
                f"{right}.",
                f"{right}, it is.",
                f"{right[0]}",
                f"{right[0].lower()}",
                "Not sure.",
                "There is a dog.",
                "I don't know",
                "Nope",
                "yeah",
                "nah",
                "",
                "No, there is not.",
                "Yes, there is a cat",
                " yes ",
                "no.",
                "It is not",
                "noo",
                "y.",
                f"{right}\n",
            ]
        )

    def add_mme_score(self, pred: str, answer: str) -> None:
        mme = self.lm.mme
        doc = {"answer": answer, "category": "count", "question_id": "x"}
        out = mme.mme_process_results(doc, [pred.strip()])["mme_perception_score"]
        self.add(
            "mme_score",
            {"prediction": pred, "references": [answer]},
            {"parse_pred_ans": mme.parse_pred_ans(pred.strip()), "score": out["score"]},
        )

    def mme(self) -> None:
        rng, mme = self.rng, self.lm.mme
        for _ in range(self.n(400)):
            answer = rng.choice(["Yes", "No"])
            self.add_mme_score(self.mme_pred(answer), answer)
        cats = mme.eval_type_dict["Perception"] + mme.eval_type_dict["Cognition"]
        for _ in range(self.n(12)):
            chosen = rng.sample(cats, rng.randint(1, 6))
            if rng.random() < 0.2:
                chosen = [c for c in chosen if c in mme.eval_type_dict["Perception"]] or chosen
            records = []
            for c in chosen:
                for img in range(rng.randint(2, 15)):
                    answers = (
                        ["Yes", "No"] if rng.random() < 0.9 else [rng.choice(["Yes", "No"])] * 2
                    )
                    for a in answers:
                        # as the vqa kind records MME: gold in references, the image in group
                        records.append(
                            {
                                "prediction": self.mme_pred(a),
                                "references": [a],
                                "category": c,
                                "group": f"{c}/{img:04d}.png",
                            }
                        )
            by_key: dict[str, list[Any]] = {"mme_perception_score": [], "mme_cognition_score": []}
            for r in records:
                doc = {"answer": r["references"][0], "category": r["category"],
                       "question_id": r["group"]}  # fmt: skip
                for key, value in mme.mme_process_results(doc, [r["prediction"].strip()]).items():
                    by_key[key].append(value)
            self.add(
                "mme_aggregate",
                {"records": records},
                {
                    "mme_perception": mme.mme_aggregate_results(by_key["mme_perception_score"])
                    if by_key["mme_perception_score"]
                    else None,
                    "mme_cognition": mme.mme_aggregate_results(by_key["mme_cognition_score"])
                    if by_key["mme_cognition_score"]
                    else None,
                },
            )


def canonical_open(parsed: Any) -> Any:
    """A parse as JSON can hold it, its order fixed: a letter stays; a list of open candidates
    (from a set, so in no order) becomes the sorted "s:text" / "f:repr(float)" strings."""
    if isinstance(parsed, str):
        return parsed
    return sorted(f"s:{p}" if isinstance(p, str) else f"f:{float(p)!r}" for p in parsed)


def read_ocrbench_totals(path: Path) -> dict[str, int]:
    """The per-category totals, "Text Recognition" and "Final Score" lmms-eval wrote."""
    totals = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(.*?)\(Total \d+\): (\d+)$", line)
        if m:
            totals[m.group(1)] = int(m.group(2))
    return totals


def generate(seed: int, scale: float) -> list[Case]:
    lm = import_lmms()
    with tempfile.TemporaryDirectory() as tmp:
        cases = Cases(lm, seed, scale, Path(tmp))
        for step in (
            cases.evalai_tables,
            cases.edges,
            cases.evalai,
            cases.vqa,
            cases.exact_match,
            cases.anls,
            cases.relaxed,
            cases.token_f1,
            cases.mcq,
            cases.mmmu,
            cases.mmbench,
            cases.mmstar,
            cases.scienceqa,
            cases.ocrbench,
            cases.mme,
        ):
            step()
    return cases.cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every case count")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cases = generate(args.seed, args.scale)
    header = {
        "generator": "tests/golden/make_lmms_metric_cases.py",
        "seed": args.seed,
        "scale": args.scale,
        "lmms_eval": importlib.metadata.version("lmms_eval"),
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in [header, *cases]:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    tmp.replace(args.out)
    logger.info("%d cases -> %s (%d bytes)", len(cases), args.out, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

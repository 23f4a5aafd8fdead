"""Metrics against worked examples (computed by hand in the comments) and against lmms-eval
(tests/test_lmms_metrics.py replays thousands of lmms-eval's own outputs)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from orchestrator.contract.metrics import Metric as ContractMetric
from orchestrator.contract.metrics import MetricValue, aggregate, combine
from workers.metrics import (
    Metric,
    accuracy,
    anls,
    anls_score,
    builtin_metrics,
    can_infer,
    can_infer_option,
    can_infer_text,
    eval_open,
    exact_match,
    exact_match_hf_evaluate,
    exact_match_score,
    extract_mcq_answer,
    extract_subset_name,
    f1_score,
    get_multi_choice_info,
    levenshtein,
    mean_loss,
    mean_with_stderr,
    mmbench_circular_hits,
    mmmu_aggregate_results,
    mmstar_exact_match,
    normalize_str,
    ocrbench,
    ocrbench_score,
    ocrbench_scores,
    parse_multi_choice_response,
    parse_open_response,
    parse_pred_ans,
    per_class_accuracy,
    relaxed_accuracy,
    relaxed_correctness,
    sqa_exact_match,
    token_f1,
    top_k_accuracy,
    vqa_accuracy,
    vqa_accuracy_score,
    vqa_normalize,
)

# ------------------------------------------------------------------ mean and stderr


def test_stderr_is_sample_std_over_sqrt_n() -> None:
    m = mean_with_stderr([1, 0, 1, 1])
    # mean 0.75; sample variance (3 * 0.25^2 + 0.75^2) / 3 = 0.75 / 3 = 0.25; sd 0.5; / sqrt(4)
    assert m == Metric(0.75, 0.25, 4)
    assert m.stderr == statistics.stdev([1, 0, 1, 1]) / 2
    assert mean_with_stderr([0.3]) == Metric(0.3, 0.0, 1)  # one sample: no spread to measure
    with pytest.raises(ValueError, match="no samples"):
        mean_with_stderr([])
    with pytest.raises(AttributeError):
        m.value = 1.0  # type: ignore[misc]  # frozen


def test_empty_and_mismatched_inputs_raise() -> None:
    for empty in (
        lambda: accuracy([]),
        lambda: mean_loss([]),
        lambda: per_class_accuracy([], []),
        lambda: exact_match([], []),
        lambda: vqa_accuracy([], []),
        lambda: anls([], []),
        lambda: relaxed_accuracy([], []),
        lambda: token_f1([], []),
    ):
        with pytest.raises(ValueError):
            empty()
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="1 predictions but 2 answer lists"):
        vqa_accuracy(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="3 predictions but 2 targets"):
        relaxed_accuracy(["1", "2", "3"], ["1", "2"])
    with pytest.raises(ValueError, match="without ground-truth"):
        vqa_accuracy(["a"], [[]])
    with pytest.raises(ValueError, match="without gold"):
        anls(["a"], [[]])
    with pytest.raises(ValueError, match="without any reference"):
        token_f1(["a"], [[]])


# ------------------------------------------------------------------ classification


def test_classification_metrics() -> None:
    assert accuracy([True, False, True, True]) == Metric(0.75, 0.25, 4)
    # label 2 is third in [3, 1, 2] and label 1 third in [0, 2, 1]: top-2 misses both, top-3 not
    assert top_k_accuracy([[3, 1, 2], [0, 2, 1]], [2, 1], k=2).value == 0.0
    assert top_k_accuracy([[3, 1, 2], [0, 2, 1]], [2, 1], k=3).value == 1.0
    assert top_k_accuracy([[3, 1, 2], [0, 2, 1]], [3, 2], k=1).value == 0.5
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy([[0]], [0], k=0)
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        top_k_accuracy([[0], [1]], [0], 1)
    # class 0: 1 of 2 right; class 1: 2 of 3 right
    assert per_class_accuracy([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]) == {0: 0.5, 1: 2 / 3}
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        per_class_accuracy([0, 1], [0])
    # losses 1, 2, 3: mean 2, sample sd 1, stderr 1 / sqrt(3)
    assert mean_loss([1.0, 2.0, 3.0]) == Metric(2.0, 1 / math.sqrt(3), 3)


# ------------------------------------------------------------------ exact match


def test_exact_match() -> None:
    # " Seven " -> "seven" (case, outer spaces); "brick" matches the second of its references
    assert exact_match([" Seven ", "brick"], ["seven", ["tile", "Brick"]]).value == 1.0
    assert exact_match(["seven."], ["seven"]).value == 0.0
    assert exact_match(["seven."], ["seven"], ignore_punctuation=True).value == 1.0
    # punctuation goes first, then the strip: "seven ." -> "seven " -> "seven"
    assert exact_match(["seven ."], ["seven"], ignore_punctuation=True).value == 1.0
    assert exact_match(["Seven"], ["seven"], ignore_case=False).value == 0.0
    assert exact_match([" seven"], ["seven"], strip=False).value == 0.0
    # 2 of 3 right: mean 2/3, sample variance (2 * (1/3)^2 + (2/3)^2) / 2 = 1/3
    m = exact_match(["a", "b", "c"], ["a", "x", "c"])
    assert m.value == pytest.approx(2 / 3)
    assert m.stderr == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))


# ------------------------------------------------------------------ VQA accuracy


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        # 1 match: 9 subsets keep it (1/3), the one leaving it out has 0 -> 9 * 1/3 / 10 = 0.3
        (1, 0.3),
        # 2 matches: 8 subsets keep both (2/3), 2 keep one (1/3) -> (8*2/3 + 2*1/3) / 10 = 0.6
        (2, 0.6),
        # 3 matches: 7 subsets keep 3 (1), 3 keep 2 (2/3) -> (7 + 3*2/3) / 10 = 0.9
        (3, 0.9),
        # 4 or more: every subset keeps at least 3 -> 1
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matches: int, expected: float) -> None:
    answers = ["yes"] * matches + ["no"] * (10 - matches)
    for processor in ("evalai", "vqav2"):
        assert vqa_accuracy(["yes"], [answers], processor=processor).value == pytest.approx(
            expected
        )


def test_vqa_normalisation() -> None:
    assert vqa_normalize("Two") == "2"  # lower-cased, then the number map
    assert vqa_normalize("none") == "0"
    assert vqa_normalize("the dog.") == "dog"  # article dropped, a final period stripped
    assert vqa_normalize("A Red Car!") == "red car"  # "!" becomes a space, then split
    assert vqa_normalize("dont") == "don't"  # contractions table
    assert vqa_normalize("1,000") == "1000"  # word_tokenize drops every comma
    assert vqa_normalize("3.5") == "3.5"  # a period before a digit stays
    assert vqa_normalize("x-ray") == "x ray"  # "-" with no space beside it becomes a space
    assert vqa_normalize("yes - no") == "yes no"  # "- " present: "-" is deleted
    assert vqa_normalize("man's") == "man 's"  # word_tokenize splits "'s"
    # "Two." -> "2", 3 of 10 answers are "2" -> 0.9
    assert vqa_accuracy(["Two."], [["2"] * 3 + ["3"] * 7]).value == pytest.approx(0.9)


def test_vqa_processors_differ_on_commas() -> None:
    answers = ["red blue"] * 3 + ["redblue"] * 2 + ["purple"] * 5
    # evalai (textvqa): word_tokenize deletes the comma -> "redblue": 2 matches -> 0.6
    assert vqa_accuracy_score("red,blue", answers, "evalai") == pytest.approx(0.6)
    # vqav2: no word_tokenize; "," has no space beside it and no digits around it, so it
    # becomes a space -> "red blue": 3 matches -> 0.9
    assert vqa_accuracy_score("red,blue", answers, "vqav2") == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown VQA answer processor"):
        vqa_accuracy(["a"], [["a"]], processor="bogus")  # type: ignore[arg-type]


# ------------------------------------------------------------------ ANLS


def test_anls_worked_examples() -> None:
    assert levenshtein("hello world", "helo world") == 1
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    # NL = 1 / max(11, 10) = 1/11 -> 1 - 1/11 = 0.9090...
    assert anls_score("helo world", ["hello world"]) == pytest.approx(10 / 11)
    # "abc" vs "xyz": NL = 3/3 -> 0
    assert anls_score("abc", ["xyz"]) == 0.0
    # "abcdef" vs "abcxyz": NL = 3/6 -> 0.5; only a score *below* 0.5 is zeroed (lmms-eval)
    assert anls_score("abcdef", ["abcxyz"]) == 0.5
    # "abcdef" vs "abxxyz": NL = 4/6 -> 1/3 < 0.5 -> 0
    assert anls_score("abcdef", ["abxxyz"]) == 0.0
    # Case and spacing do not count; the best gold answer wins.
    assert anls_score("  Hello   World ", ["nope", "hello world"]) == 1.0
    # max over golds: "cat" vs "cart" NL 1/4 -> 0.75, vs "cap" NL 1/3 -> 0.667: 0.75
    assert anls_score("cat", ["cap", "cart"]) == pytest.approx(0.75)
    # the denominator is the raw length: "a  b" (4 chars) vs "a b" -> distance 0 -> 1
    assert anls_score("a  b", ["a b"]) == 1.0
    assert anls_score("", [""]) == 1.0  # both empty: NL defined as 0
    m = anls(["helo world", "abc"], [["hello world"], ["xyz"]])
    assert m.value == pytest.approx(5 / 11) and m.n == 2
    # per-sample [10/11, 0]: sample sd = (10/11) / sqrt(2), stderr = sd / sqrt(2) = 5/11
    assert m.stderr == pytest.approx(5 / 11)


# ------------------------------------------------------------------ relaxed accuracy


def test_relaxed_accuracy_chartqa() -> None:
    assert relaxed_correctness("10.4", "10")  # |10.4 - 10| / 10 = 4 % <= 5 %
    assert relaxed_correctness("10.5", "10")  # exactly 5 %: allowed (<=)
    assert not relaxed_correctness("11", "10")  # 10 %
    assert relaxed_correctness("-10.4", "-10")  # relative to |target|
    assert relaxed_correctness("45%", "0.45")  # "45%" -> 45 / 100 = 0.45
    assert relaxed_correctness("0.45", "45%")
    assert not relaxed_correctness("45", "45%")  # 45 vs 0.45
    assert relaxed_correctness("Yes", "yes")  # text: case-insensitive exact match
    assert not relaxed_correctness("yes.", "yes")
    # a target of 0 is falsy in lmms-eval, so it is compared as a string
    assert relaxed_correctness("0", "0")
    assert not relaxed_correctness("0.0", "0")
    assert not relaxed_correctness("0.01", "0")
    assert relaxed_accuracy(["10.4", "11"], ["10", "10"]) == Metric(0.5, 0.5, 2)
    assert relaxed_accuracy(["11"], ["10"], max_relative_change=0.1).value == 1.0


# ------------------------------------------------------------------ token F1


def test_token_f1_squad() -> None:
    # "the" is an article: pred [cat, sat] vs ref [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8
    assert token_f1(["the cat sat"], ["cat sat down"]).value == pytest.approx(0.8)
    # 1 common token: P = 1/2, R = 1 -> F1 = 2 * 0.5 / 1.5 = 2/3
    assert f1_score("Barack Obama", "obama") == pytest.approx(2 / 3)
    # a bag, not a set: pred [cat, cat] vs ref [cat]: common 1, P = 1/2, R = 1 -> 2/3
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)
    assert token_f1(["Paris!"], [["London", "paris"]]).value == 1.0  # the best reference
    assert token_f1(["no overlap"], ["something else"]).value == 0.0
    # SQuAD v2 / lmms-eval: no tokens on either side scores 1 only if both have none
    assert f1_score("the", "a") == 1.0
    assert f1_score("", "cat") == 0.0


# ------------------------------------------------------------------ against lmms-eval itself

# Produced by running lmms-eval 0.7.3's own functions (the PyPI wheel, loaded from its source
# files without its package imports) on these inputs: tasks/vqav2/utils.py
# vqav2_process_results (answers as dicts with distinct answer_id) and tasks/textvqa/utils.py
# textvqa_process_results -> "exact_match".
LMMS_VQA = [
    # (prediction, answers, vqav2 value, textvqa value)
    ("Two dogs.", ["2 dogs"] * 2 + ["two dogs"] + ["dogs"] * 7, 0.9, 0.9),
    ("red,blue", ["red blue"] * 3 + ["redblue"] * 2 + ["purple"] * 5, 0.9, 0.6),
    ("1,000", ["1000"] * 2 + ["1,000"] * 2 + ["one thousand"] * 6, 1.0, 1.0),
    ("The man's hat", ["mans hat"] * 2 + ["man's hat"] * 3 + ["hat"] * 5, 0.9, 0.9),
]
# api/metrics.py anls(references, [prediction])["anls"]
LMMS_ANLS = [
    ("helo world", ["hello world"], 0.9090909090909091),
    ("  Invoice  No. ", ["invoice no.", "inv no"], 1.0),
    ("$1,234.00", ["1234", "$1,234"], 0.6666666666666667),
    ("abcdef", ["abcxyz"], 0.5),
    ("x", ["yyyy"], 0.0),
]
# tasks/chartqa/utils.py relaxed_correctness(prediction, target)
LMMS_RELAXED = [
    ("10.4", "10", True),
    ("11", "10", False),
    ("45%", "0.45", True),
    ("0.45", "45%", True),
    ("45", "45%", False),
    ("0", "0", True),
    ("0.0", "0", False),
    (" 12 ", "12", True),  # float() ignores outer whitespace
    ("12.6%", "12%", False),  # 0.006 / 0.12 is 0.05000000000000004 in floating point
    ("1e1", "10", True),
]
# tasks/mmsearch/score/f1_score.py get_f1_score(prediction, reference)
LMMS_F1 = [
    ("the cat sat", "cat sat down", 0.8),
    ("Barack Obama", "obama", 0.6666666666666666),
    ("", "", 1.0),
    ("New York City", "new york", 0.8),
]


@pytest.mark.parametrize(("pred", "answers", "vqav2", "textvqa"), LMMS_VQA)
def test_vqa_matches_lmms_eval(pred: str, answers: list[str], vqav2: float, textvqa: float) -> None:
    assert vqa_accuracy_score(pred, answers, "vqav2") == pytest.approx(vqav2, abs=1e-12)
    assert vqa_accuracy_score(pred, answers, "evalai") == pytest.approx(textvqa, abs=1e-12)


def test_other_metrics_match_lmms_eval() -> None:
    for pred, golds, expected in LMMS_ANLS:
        assert anls_score(pred, golds) == expected, (pred, golds)
    for pred, target, ok in LMMS_RELAXED:
        assert relaxed_correctness(pred, target) is ok, (pred, target)
    for pred, ref, f1 in LMMS_F1:
        assert f1_score(pred, ref) == f1, (pred, ref)
    # api/metrics.py mean / mean_stderr on [0.6, 0.9, 1.0, 0.0, 1/3]
    m = mean_with_stderr([0.6, 0.9, 1.0, 0.0, 1 / 3])
    assert (m.value, m.stderr) == (0.5666666666666667, 0.1837873166945363)


# ------------------------------------------------------------------ exact match: every option


def test_exact_match_options_in_lmms_evals_order() -> None:
    # regexes go before lower-casing: a case-sensitive "^the" misses "The"
    assert (
        exact_match(["The answer: 42"], ["42"], regexes_to_ignore=[r"^the answer:\s*"]).value == 0
    )
    assert exact_match(["The answer: 42"], ["42"], regexes_to_ignore=[r"(?i)^the answer:\s*"]).value
    # digits dropped: "room 101" and "room 7" are both "room " (then stripped)
    assert exact_match(["room 101"], ["room 7"], ignore_numbers=True).value == 1.0
    # lmms-eval's own function: no strip; the share of equal positions
    assert exact_match_hf_evaluate(["Seven "], ["seven"], ignore_case=True) == {"exact_match": 0.0}
    assert exact_match_hf_evaluate(["a", "b"], ["a", "c"]) == {"exact_match": 0.5}
    assert exact_match_hf_evaluate(["a.b,c!"], ["abc"], ignore_punctuation=True)["exact_match"] == 1
    # numpy: a trailing NUL is padding, and "İ".lower() (2 code points) is cut to the width, 1
    assert exact_match_hf_evaluate(["a\x00"], ["a"])["exact_match"] == 1.0
    assert exact_match_hf_evaluate(["İ"], ["i̇"], ignore_case=True)["exact_match"] == 0.0
    assert exact_match(["İ"], ["i̇"]).value == 1.0  # orch lower-cases in full
    # the registry's exact_match strips the references too (lmms-eval: the prediction only)
    assert exact_match_score(" yes\n", ["yes "]) == 1.0


# ------------------------------------------------------------------ multiple choice


def test_parse_multi_choice_response_mmmu_rules() -> None:
    index2ans, letters = get_multi_choice_info(["cat", "dog", "cow"])
    assert (index2ans, letters) == ({"A": "cat", "B": "dog", "C": "cow"}, ["A", "B", "C"])
    assert parse_multi_choice_response("The answer is (B).", letters, index2ans) == "B"
    # two bare letters: " A " at 0 and " B " at 2 in " A B ": the later wins
    assert parse_multi_choice_response("A B", letters, index2ans) == "B"
    # "(X)" beats everything, the last "(X)" among several
    assert parse_multi_choice_response("(A) or maybe (C)", letters, index2ans) == "C"
    # option text counts only in more than five words; the last occurrence wins
    said = "I think it is the dog, not the cat"
    assert parse_multi_choice_response(said, letters, index2ans) == "A"
    # nothing found: a guess from the given random state
    guess = parse_multi_choice_response("dog", letters, index2ans, rng=random.Random(7))
    assert guess == random.Random(7).choice(letters)
    with pytest.raises(ValueError, match="without options"):
        parse_multi_choice_response("A", [], {})


def test_mcq_and_mmmu_registry_metrics() -> None:
    metrics = {m.name: m for m in builtin_metrics()}
    record = {"id": "q1", "prediction": " (B) dog", "options": ["cat", "dog"], "answer": "B"}
    assert metrics["mcq_accuracy"].score(record) == 1.0
    # the guess for a sample that names no option is the same in every call (seeded per sample)
    unsure = {"id": "q2", "prediction": "no idea", "options": ["a", "b", "c", "d"], "answer": "C"}
    assert len({metrics["mcq_accuracy"].score(unsure) for _ in range(5)}) == 1
    # MMMU: without question_type a record is multiple-choice; open answers as numbers
    assert metrics["mmmu_accuracy"].score(record) == 1.0
    said = "So the answer is 3.50."
    opened = {"prediction": said, "options": [], "answer": "3.5", "question_type": "open"}
    assert 3.5 in parse_open_response(said)
    assert metrics["mmmu_accuracy"].score(opened) == 1.0
    assert normalize_str("a") == [" a", "a "]  # one character matches only as a word
    assert eval_open("a", ["banana"]) is False and eval_open("a", ["is a "]) is True
    # lmms-eval's aggregate rounds to 5 decimals; the registry keeps the mean
    results = [
        {"id": f"validation_Art_{i}", "subdomain": "Art", "question_type": "multiple-choice",
         "answer": "A", "parsed_pred": [p]}
        for i, p in enumerate("ABB")
    ]  # fmt: skip
    assert mmmu_aggregate_results(results) == 0.33333
    assert extract_subset_name("validation_Art_Theory_12") == "Art_Theory"


def test_extract_mcq_answer_mmstar_and_scienceqa() -> None:
    assert extract_mcq_answer("B") == "B"
    # "Answer" starts with A but "n" follows: not a standalone letter; "(C)" decides
    assert extract_mcq_answer("Answer: (C)") == "C"
    assert extract_mcq_answer("  ") == ""
    assert extract_mcq_answer("the cat", choices=["A", "B"]) == ""
    assert mmstar_exact_match("The answer is (D).", " d ") == 1.0
    # LLaVA's ScienceQA rule: the letter alone, or "<Upper>." first
    assert sqa_exact_match("B. dog", "B") == 1.0
    assert sqa_exact_match("b", "B") == 1.0
    assert sqa_exact_match("The answer is B", "B") == 0.0


def test_mmbench_option_matching_and_circular_groups() -> None:
    assert can_infer_option("B") == "B"
    assert can_infer_option("A dog runs") == "A"  # one bare letter, 3 words
    assert can_infer_option("A dog runs fast") is False  # "A" may be the article past 3 words
    assert can_infer_option("I pick (C).") == "C"
    # two bare letters: no option letter; the only option text inside decides
    assert can_infer("A cat is on the mat, B", {"A": "dog", "B": "mat"}) == "B"
    assert can_infer_text("a dog and a cat", {"A": "dog", "B": "cat"}) is False  # two texts
    row = {"prediction": "B", "options": ["cat", "dog"], "answer": "B"}
    rows = [
        {**row, "index": 5},
        {**row, "index": 1_000_005, "options": ["dog", "cat"], "answer": "A", "prediction": "A"},
        {**row, "index": 6},
    ]
    metric = {m.name: m for m in builtin_metrics()}["mmbench_accuracy"]
    assert aggregate(metric, rows) == MetricValue(1.0, 0.0, 2)  # two questions, both right
    rows[1]["prediction"] = "B"  # the rotated copy wrong: question 5 scores 0
    assert mmbench_circular_hits(rows) == {5: 0.0, 6: 1.0}
    assert aggregate(metric, rows).value == 0.5
    # the mcq kind's records: no index, the base index in group (a record without one: alone)
    by_group = [{k: v for k, v in r.items() if k != "index"} | {"group": "5"} for r in rows[:2]]
    assert aggregate(metric, [*by_group, row]) == MetricValue(0.5, 0.5, 2)
    assert aggregate(metric, [row, {**row, "prediction": "A"}]).value == 0.5


# ------------------------------------------------------------------ OCRBench and MME


def test_ocrbench_rules_and_total() -> None:
    assert ocrbench_score("The sign says STOP", ["stop"], "IIIT5K") == 1
    assert ocrbench_score("ＳＴＯＰ", "stop", "IIIT5K") == 1  # fullwidth folded
    assert ocrbench_score("x^{2}", ["x ^ { 2 }"], "HME100k") == 1  # spaces dropped
    assert ocrbench_score("X^{2}", ["x ^ { 2 }"], "HME100k") == 0  # case kept for formulas
    metric = {m.name: m for m in builtin_metrics()}["ocrbench_accuracy"]
    records = [
        {"prediction": "STOP", "references": ["stop"], "category": "Regular Text Recognition"},
        {"prediction": "x", "references": ["y"], "category": "Doc-oriented VQA"},
        {"prediction": "x ^ 2", "references": ["x^2"], "category": ocrbench.HMER},
    ]
    # 2 of 3 right: 2/3 (lmms-eval: 2/1000), and the same on a second aggregation
    assert aggregate(metric, records).value == pytest.approx(2 / 3)
    assert aggregate(metric, records).value == pytest.approx(2 / 3)
    totals = ocrbench_scores([{"question_type": r["category"], "score": metric.score(r)}
                              for r in records])  # fmt: skip
    assert (totals["Text Recognition"], totals["Final Score"], totals[ocrbench.HMER]) == (1, 2, 1)
    with pytest.raises(ValueError, match="unknown OCRBench category"):
        metric.score({**records[0], "category": "Poetry"})


def test_mme_scores_by_image_pairs() -> None:
    def q(category: str, image: str, answer: str, prediction: str) -> dict[str, str]:
        return {"category": category, "question_id": f"{category}/{image}", "answer": answer,
                "prediction": prediction}  # fmt: skip

    records = [
        q("count", "1.png", "Yes", "Yes"), q("count", "1.png", "No", "No"),  # 100 + 100
        q("count", "2.png", "Yes", "Yes"), q("count", "2.png", "No", "Yes"),  # 50 + 0
        q("OCR", "1.png", "Yes", "No"), q("OCR", "1.png", "No", "Yes."),  # 0 + 0
        q("code_reasoning", "1.png", "Yes", "yes"), q("code_reasoning", "1.png", "No", "n"),
    ]  # fmt: skip
    m = {m.name: m for m in builtin_metrics()}
    # count: (200 + 50) / 2 = 125; OCR: 0; perception = 125. code_reasoning: 200
    perception = aggregate(m["mme_perception"], records)
    assert (perception.value, perception.n) == (125.0, 6) and math.isnan(perception.stderr)
    assert aggregate(m["mme_cognition"], records).value == 200.0
    assert aggregate(m["mme_accuracy"], records).value == 5 / 8
    # 4 images, 2 with both right
    # 4 images, 2 with both right: [1, 1, 0, 0], sample sd sqrt(1/3), stderr sqrt(1/3) / 2
    plus = aggregate(m["mme_accuracy_plus"], records)
    assert (plus.value, plus.n) == (0.5, 4) and plus.stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert math.isnan(aggregate(m["mme_cognition"], records[:6]).value)  # no cognition records
    assert parse_pred_ans("Not sure") == "no"  # Otter's rule: "no" within the first 4 characters
    with pytest.raises(ValueError, match="pairs of questions"):
        aggregate(m["mme_perception"], records[:3])
    # as the vqa kind records MME: the gold in references, the image in group
    as_vqa = [
        {"prediction": r["prediction"], "references": [r["answer"]], "category": r["category"],
         "group": r["question_id"]}
        for r in records
    ]  # fmt: skip
    assert aggregate(m["mme_perception"], as_vqa).value == 125.0
    with pytest.raises(ValueError, match="names no image"):
        aggregate(m["mme_perception"], [{k: v for k, v in as_vqa[0].items() if k != "group"}])
    with pytest.raises(ValueError, match="yes or no"):
        m["mme_accuracy"].score({"prediction": "yes", "answer": "maybe"})


def test_mmstar_average_is_a_mean_over_categories() -> None:
    metric = {m.name: m for m in builtin_metrics()}["mmstar_accuracy"]
    records = [{"prediction": "A", "answer": "A", "category": "geometry"}] + [
        {"prediction": "B", "answer": "A", "category": "localization"}
    ] * 3
    # geometry 1/1, localization 0/3: (1 + 0) / 2 (the mean over samples would be 1/4)
    assert aggregate(metric, records).value == 0.5


def test_a_metric_with_its_own_aggregate() -> None:
    total = ContractMetric(
        "total", lambda r: float(r["x"]), True, frozenset({"x"}),
        aggregate=lambda rs: MetricValue(sum(float(r["x"]) for r in rs), math.nan, len(rs)),
    )  # fmt: skip
    plain = ContractMetric("mean_x", lambda r: float(r["x"]), True, frozenset({"x"}))
    records = [{"x": 1}, {"x": 2}, {"x": 6}]
    assert aggregate(total, records).value == 9.0
    assert aggregate(plain, records).value == 3.0
    # datasets still combine by a weighted mean
    assert combine([MetricValue(9.0, math.nan, 3), MetricValue(1.0, math.nan, 1)]).value == 7.0


def test_registered_metric_names() -> None:
    names = {m.name for m in builtin_metrics()}
    assert names >= {
        "accuracy", "loss", "top5_accuracy", "exact_match", "anls", "relaxed_accuracy",
        "token_f1", "vqa_accuracy", "vqav2_accuracy", "mcq_accuracy", "mmbench_accuracy",
        "mmmu_accuracy", "ocrbench_accuracy", "mme_perception", "mme_cognition",
        "mme_accuracy", "mme_accuracy_plus", "mmmu_open_accuracy", "mmstar_accuracy",
        "scienceqa_accuracy",
    }  # fmt: skip
    m = {m.name: m for m in builtin_metrics()}
    ten = {"prediction": "red,blue", "references": ["red blue"] * 3 + ["redblue"] * 2 + ["x"] * 5}
    assert m["vqa_accuracy"].score(ten) == pytest.approx(0.6)
    assert m["vqav2_accuracy"].score(ten) == pytest.approx(0.9)
    # records that name the annotators' answers "answers" (orch's first vqa_accuracy) still work
    assert m["vqa_accuracy"].score({"prediction": "x", "answers": ["x"] * 4}) == 1.0
    opened = {"prediction": "Thus the result is 1,200", "references": ["1200"]}
    assert m["mmmu_open_accuracy"].score(opened) == 1.0

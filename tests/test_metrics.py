"""Metrics against worked examples (computed by hand in the comments)."""

from __future__ import annotations

import math

import pytest

from workers.metrics import (
    accuracy,
    anls,
    anls_score,
    exact_match,
    levenshtein,
    mean_with_stderr,
    per_class_accuracy,
    relaxed_accuracy,
    relaxed_correctness,
    token_f1,
    top_k_accuracy,
    vqa_accuracy,
    vqa_normalize,
)


def test_stderr_is_sample_std_over_sqrt_n() -> None:
    m = mean_with_stderr([1, 0, 1, 1])
    # mean 0.75; sample variance ((0.25^2)*3 + 0.75^2)/3 = 0.25; sd 0.5; / sqrt(4) = 0.25
    assert (m.value, m.stderr, m.n) == (0.75, 0.25, 4)
    assert mean_with_stderr([0.3]).stderr == 0.0
    with pytest.raises(ValueError, match="no samples"):
        mean_with_stderr([])


def test_classification_metrics() -> None:
    assert accuracy([True, False, True, True]).value == 0.75
    assert top_k_accuracy([[3, 1, 2], [0, 2, 1]], [2, 1], k=2).value == 0.0
    assert top_k_accuracy([[3, 1, 2], [0, 2, 1]], [2, 1], k=3).value == 1.0
    assert per_class_accuracy([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]) == {0: 0.5, 1: 2 / 3}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        top_k_accuracy([[0], [1]], [0], 1)


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        # 1 match: 9 subsets keep it (1/3), the subset without it has 0 -> 9/3/10 = 0.3
        (1, 0.3),
        # 2 matches: 8 subsets keep both (2/3), 2 keep one (1/3) -> (8*2/3 + 2*1/3)/10 = 0.6
        (2, 0.6),
        # 3 matches: 7 subsets keep 3 (1), 3 keep 2 (2/3) -> (7 + 3*2/3)/10 = 0.9
        (3, 0.9),
        # 4 or more: every subset keeps at least 3 -> 1
        (4, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matches: int, expected: float) -> None:
    answers = ["yes"] * matches + ["no"] * (10 - matches)
    assert vqa_accuracy(["yes"], [answers]).value == pytest.approx(expected)


def test_vqa_normalisation() -> None:
    assert vqa_normalize("Two") == "2"
    assert vqa_normalize("the dog.") == "dog"
    assert vqa_normalize("dont") == "don't"
    assert vqa_normalize("A Red Car!") == "red car"
    assert vqa_normalize("1,000") == "1000"  # a comma between digits is removed
    assert vqa_normalize("3.5") == "3.5"  # a decimal point stays
    assert vqa_accuracy(["Two."], [["2"] * 3 + ["3"] * 7]).value == pytest.approx(0.9)


def test_anls_worked_examples() -> None:
    assert levenshtein("hello world", "helo world") == 1
    # NL = 1 / max(11, 10) = 1/11 -> 1 - 1/11
    assert anls_score("helo world", ["hello world"]) == pytest.approx(10 / 11)
    # "abc" vs "xyz": NL = 3/3 -> score 0, below the 0.5 threshold
    assert anls_score("abc", ["xyz"]) == 0.0
    # "abcdef" vs "abcxyz": NL = 3/6 -> 0.5, not below the threshold: kept
    assert anls_score("abcdef", ["abcxyz"]) == 0.5
    # "abcdef" vs "abxxyz": NL = 4/6 -> 1/3 < 0.5 -> 0
    assert anls_score("abcdef", ["abxxyz"]) == 0.0
    # Case and outer spaces do not count; the best gold answer wins.
    assert anls_score("  Hello World ", ["nope", "hello world"]) == 1.0
    m = anls(["helo world", "abc"], [["hello world"], ["xyz"]])
    assert m.value == pytest.approx(5 / 11) and m.n == 2


def test_relaxed_accuracy_chartqa() -> None:
    assert relaxed_correctness("10.4", "10")  # 4 % off
    assert not relaxed_correctness("11", "10")  # 10 % off
    assert relaxed_correctness("45%", "0.45")  # 45 % is 0.45
    assert relaxed_correctness("Yes", "yes")  # text: case-insensitive
    assert not relaxed_correctness("0.01", "0")  # a zero target is compared as a string
    assert relaxed_correctness("0", "0")
    assert relaxed_accuracy(["10.4", "11"], ["10", "10"]).value == 0.5


def test_token_f1_and_exact_match() -> None:
    # pred tokens {the->removed} [cat, sat], ref [cat, sat, down]: P=1, R=2/3, F1=0.8
    assert token_f1(["the cat sat"], ["cat sat down"]).value == pytest.approx(0.8)
    assert token_f1(["Paris!"], [["London", "paris"]]).value == 1.0
    assert token_f1(["no overlap"], ["something else"]).value == 0.0
    assert exact_match([" Seven ", "brick"], ["seven", ["tile", "Brick"]]).value == 1.0
    assert exact_match(["seven."], ["seven"]).value == 0.0
    assert exact_match(["seven."], ["seven"], ignore_punctuation=True).value == 1.0
    m = exact_match(["a", "b", "c"], ["a", "x", "c"])
    assert m.value == pytest.approx(2 / 3) and m.stderr == pytest.approx(
        math.sqrt(1 / 3) / math.sqrt(3)
    )

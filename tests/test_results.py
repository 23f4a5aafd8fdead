"""Merging and best-model choice are pure functions over values."""

from __future__ import annotations

import copy
import math

import pytest

from orchestrator.core.merge import choose_best, flat_metrics, merge_parts


def part(step: int, loss: float, correct: int, n: int) -> dict:
    return {
        "step": step,
        "metrics": {"loss": loss, "accuracy": correct / n},
        "n": n,
        "correct": correct,
    }


def test_merge_weights_by_n_and_keeps_inputs() -> None:
    parts = {"a": part(100, 0.5, 90, 100), "b": part(100, 2.0, 5, 10)}
    before = copy.deepcopy(parts)
    merged = merge_parts(100, parts, ["a", "b"], partial=True)
    assert parts == before
    assert merged["overall"]["n"] == 110
    assert merged["overall"]["accuracy"] == pytest.approx(95 / 110)
    assert merged["overall"]["loss"] == pytest.approx((0.5 * 100 + 2.0 * 10) / 110)
    assert merged["datasets"]["b"] == {"loss": 2.0, "accuracy": 0.5, "n": 10, "correct": 5}
    assert merged["missing"] == {} and merged["partial"] is True and merged["schema"] == 1


def test_merge_lists_missing_parts_with_reasons() -> None:
    merged = merge_parts(
        5,
        {"a": part(5, 1.0, 1, 2)},
        ["a", "b", "c"],
        partial=True,
        failed={"b": "exit code 1: boom"},
    )
    assert merged["missing"] == {"b": "exit code 1: boom", "c": "no result"}
    assert merged["overall"]["n"] == 2


def test_merge_rejects_a_part_of_another_step() -> None:
    with pytest.raises(ValueError, match="part a is for step 7, not 5"):
        merge_parts(5, {"a": part(7, 1.0, 1, 2)}, ["a"], partial=True)


def test_empty_merge_is_nan_not_zero() -> None:
    merged = merge_parts(1, {}, ["a"], partial=True)
    assert math.isnan(merged["overall"]["accuracy"])


def steps() -> list[dict]:
    return [
        merge_parts(
            10, {"a": part(10, 1.0, 5, 10), "b": part(10, 1.0, 5, 10)}, ["a", "b"], partial=True
        ),
        merge_parts(
            20, {"a": part(20, 0.4, 9, 10), "b": part(20, 2.0, 2, 10)}, ["a", "b"], partial=True
        ),
        merge_parts(
            30, {"a": part(30, 0.6, 8, 10), "b": part(30, 0.9, 6, 10)}, ["a", "b"], partial=True
        ),
        # Step 40 has the best number for `a` but is missing `b`: not eligible.
        merge_parts(40, {"a": part(40, 0.1, 10, 10)}, ["a", "b"], partial=True),
    ]


def test_choose_best_by_metric_and_mode() -> None:
    assert choose_best(steps(), "overall_accuracy", "max").step == 30  # 14/20 beats 11/20
    assert choose_best(steps(), "a_accuracy", "max").step == 20
    assert choose_best(steps(), "overall_loss", "min").step == 30
    assert choose_best(steps(), "b_loss", "min").step == 30
    assert choose_best([], "overall_accuracy", "max") is None


def test_ties_keep_the_earlier_step() -> None:
    s = steps()
    s.append(
        merge_parts(
            50, {"a": part(50, 0.6, 8, 10), "b": part(50, 0.9, 6, 10)}, ["a", "b"], partial=True
        )
    )
    assert choose_best(s, "overall_accuracy", "max").step == 30


def test_flat_metrics_keys() -> None:
    flat = flat_metrics(steps()[0])
    assert flat["overall/accuracy"] == 0.5 and flat["a/n"] == 10.0 and "b/loss" in flat

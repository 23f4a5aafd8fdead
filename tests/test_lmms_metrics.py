"""orch's metrics against lmms-eval 0.7.3's own functions, case by case.

(a) tests/golden/lmms_metric_cases.jsonl (written by tests/golden/make_lmms_metric_cases.py
    running lmms-eval in .venv-lmms) is replayed through orch's functions and registry metrics;
    every output must agree (floats within 1e-9) except the cases listed in ``DOCUMENTED``, each
    with the fields that differ and why. No lmms-eval needed.
(b) Where .venv-lmms has lmms-eval (``make lmms``), the generator runs there on a new seed and
    orch must agree again, every disagreement explained by ``divergence_rules``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.contract.metrics import aggregate
from tests.helpers.paths import ROOT
from workers.metrics import (
    EvalAIAnswerProcessor,
    builtin_metrics,
    can_infer,
    exact_match_hf_evaluate,
    extract_mcq_answer,
    extract_subset_name,
    f1_score,
    get_multi_choice_info,
    mmmu_aggregate_results,
    ocrbench_scores,
    parse_multi_choice_response,
    parse_open_response,
    parse_pred_ans,
)
from workers.metrics.mmbench import build_choices
from workers.metrics.registry import sample_rng

logger = logging.getLogger(__name__)
GOLDEN = ROOT / "tests" / "golden"
TABLE = GOLDEN / "lmms_metric_cases.jsonl"
GENERATOR = GOLDEN / "make_lmms_metric_cases.py"
LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"
TOLERANCE = 1e-9
METRICS = {m.name: m for m in builtin_metrics()}

Case = dict[str, Any]
Outputs = dict[str, Any]

# ------------------------------------------------------------------ orch's side of each kind


def canonical_open(parsed: Any) -> Any:
    """As the generator writes a parse: a letter, or the sorted candidates of an open answer."""
    if isinstance(parsed, str):
        return parsed
    return sorted(f"s:{p}" if isinstance(p, str) else f"f:{float(p)!r}" for p in parsed)


def score(name: str, record: Case) -> float:
    return METRICS[name].score(record)


def value(name: str, records: list[Case]) -> float:
    return aggregate(METRICS[name], records).value


def _mcq(r: Case) -> Outputs:
    index2ans, choices = get_multi_choice_info(r["options"])
    parsed = parse_multi_choice_response(
        r["prediction"].strip(), choices, index2ans, rng=sample_rng(r)
    )
    return {"parsed": parsed, "score": score("mcq_accuracy", r)}


def _mmmu_parse(r: Case) -> Any:
    if r["question_type"] == "multiple-choice":
        index2ans, choices = get_multi_choice_info(r["options"])
        return parse_multi_choice_response(
            r["prediction"].strip(), choices, index2ans, rng=sample_rng(r)
        )
    return parse_open_response(r["prediction"].strip())


def _mmmu_aggregate(inp: Case) -> Outputs:
    results = [
        {
            "id": r["id"],
            "subdomain": extract_subset_name(r["id"]),
            "question_type": r["question_type"],
            "answer": r["answer"],
            "parsed_pred": [_mmmu_parse(r)],
        }
        for r in inp["records"]
    ]
    return {
        "mmmu_aggregate_results": mmmu_aggregate_results(results),
        "mmmu_accuracy": value("mmmu_accuracy", inp["records"]),
    }


def _ocrbench_aggregate(inp: Case) -> Outputs:
    records = inp["records"]
    results = [
        {"question_type": r["category"], "score": score("ocrbench_accuracy", r)} for r in records
    ]
    return {
        "ocrbench_scores": ocrbench_scores(results),
        "ocrbench_accuracy": value("ocrbench_accuracy", records),
    }


def _as_vqa_record(r: Case) -> Case:
    """An MMMU question as the vqa kind records an open one: the answer(s) in references."""
    answers = r["answer"] if isinstance(r["answer"], list) else [r["answer"]]
    return {"prediction": r["prediction"], "references": answers}


def _as_mcq_rows(records: list[Case]) -> list[Case]:
    """MMBench rows as the mcq kind records them: no index, ``group`` the base index."""
    return [
        {**{k: v for k, v in r.items() if k != "index"}, "group": str(r["index"] % 1_000_000)}
        for r in records
    ]


_P = EvalAIAnswerProcessor
# orch's accuracies are fractions; lmms-eval's MMBench gpt_eval_score is a percentage.
PERCENT = 100.0

ORCH: dict[str, Callable[[Case], Outputs]] = {
    "evalai_tables": lambda _: {
        "CONTRACTIONS": _P.CONTRACTIONS, "NUMBER_MAP": _P.NUMBER_MAP,
        "ARTICLES": _P.ARTICLES, "PUNCTUATIONS": _P.PUNCTUATIONS,
    },
    "evalai_processor": lambda i: {"processed": EvalAIAnswerProcessor()(i["text"])},
    "vqa_accuracy": lambda r: {"score": score("vqa_accuracy", r)},
    "vqav2_accuracy": lambda r: {"score": score("vqav2_accuracy", r)},
    "exact_match": lambda r: {"score": score("exact_match", r)},
    "exact_match_hf_evaluate": lambda i: exact_match_hf_evaluate(**i),
    "anls": lambda r: {"score": score("anls", r)},
    "relaxed_accuracy": lambda r: {"score": score("relaxed_accuracy", r)},
    "token_f1": lambda i: {"f1": f1_score(i["prediction"], i["reference"])},
    "mcq_accuracy": _mcq,
    "extract_mcq_answer": lambda i: {"letter": extract_mcq_answer(i["response"], i["choices"])},
    "mmmu_accuracy": lambda r: {
        "parsed": canonical_open(_mmmu_parse(r)), "score": score("mmmu_accuracy", r),
        "open_score": score("mmmu_open_accuracy", _as_vqa_record(r)),
    },
    "mmmu_aggregate": _mmmu_aggregate,
    "mmbench_row": lambda r: {
        "can_infer": can_infer(r["prediction"].strip(), build_choices(r["options"])),
        "hit_percent": PERCENT * value("mmbench_accuracy", [r]),
    },
    "mmbench_aggregate": lambda i: {
        "percent": PERCENT * value("mmbench_accuracy", i["records"]),
        "percent_by_group": PERCENT * value("mmbench_accuracy", _as_mcq_rows(i["records"])),
    },
    "mmstar": lambda r: {"score": score("mmstar_accuracy", r)},
    "mmstar_aggregate": lambda i: {"average": value("mmstar_accuracy", i["records"])},
    "scienceqa": lambda r: {"score": score("scienceqa_accuracy", r)},
    "ocrbench_accuracy": lambda r: {"score": score("ocrbench_accuracy", r)},
    "ocrbench_aggregate": _ocrbench_aggregate,
    "mme_score": lambda r: {
        "parse_pred_ans": parse_pred_ans(r["prediction"].strip()),
        "score": score("mme_accuracy", r),
    },
    "mme_aggregate": lambda i: {
        "mme_perception": value("mme_perception", i["records"]),
        "mme_cognition": value("mme_cognition", i["records"]),
    },
}  # fmt: skip

# The metric (registry name, or lmms-eval function) each kind of case exercises.
METRIC_OF = {
    "evalai_tables": "EvalAIAnswerProcessor", "evalai_processor": "EvalAIAnswerProcessor",
    "mmmu_accuracy": "mmmu_accuracy, mmmu_open_accuracy",
    "mmmu_aggregate": "mmmu_accuracy", "mmbench_row": "mmbench_accuracy",
    "mmbench_aggregate": "mmbench_accuracy", "mmstar": "mmstar_accuracy",
    "mmstar_aggregate": "mmstar_accuracy", "scienceqa": "scienceqa_accuracy",
    "ocrbench_aggregate": "ocrbench_accuracy", "mme_score": "mme_accuracy",
    "mme_aggregate": "mme_perception, mme_cognition",
}  # fmt: skip

# ------------------------------------------------------------------ where orch differs, and why

EXACT_MATCH_STRIP = "orch strips the references too (lmms-eval: the prediction only)"
EXACT_MATCH_LOWER = "numpy's lower() cuts a longer lower case to the array's width"
OCRBENCH_1000 = "lmms-eval divides by 1000 whatever the sample count"
OCRBENCH_TWICE = "lmms-eval's module-level totals add a second aggregation to the first"
MMMU_ROUNDED = "lmms-eval rounds the accuracy to 5 decimals"


def _exact_match_rule(case: Case) -> dict[str, str]:
    inp = case["input"]
    if any(r != r.strip() for r in inp["references"]):
        return {"score": EXACT_MATCH_STRIP}
    if any(len(s.lower()) != len(s) for s in [inp["prediction"], *inp["references"]]):
        return {"score": EXACT_MATCH_LOWER}
    return {}


def _ocrbench_rule(case: Case) -> dict[str, str]:
    if case["input"]["after_another_aggregation"]:
        return {"ocrbench_accuracy": OCRBENCH_TWICE, "ocrbench_scores": OCRBENCH_TWICE}
    if len(case["input"]["records"]) != 1000:
        return {"ocrbench_accuracy": OCRBENCH_1000}
    return {}


def divergence_rules(case: Case) -> dict[str, str]:
    """The fields of a case where orch may differ from lmms-eval on purpose, with the reason
    (workers/metrics/__init__.py lists these divergences)."""
    rule = {
        "exact_match": _exact_match_rule,
        "ocrbench_aggregate": _ocrbench_rule,
        "mmmu_aggregate": lambda _: {"mmmu_accuracy": MMMU_ROUNDED},
    }.get(case["kind"])
    return rule(case) if rule else {}


# Every case of the checked-in table where orch differs from lmms-eval, by key: the fields that
# differ and why (mmmu_aggregate/00001 and /00007 are absent: there rounding changed nothing).
DOCUMENTED: dict[str, tuple[tuple[str, ...], str]] = {
    "exact_match/00000": (("score",), EXACT_MATCH_LOWER),
    "exact_match/00001": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00024": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00085": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00125": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00157": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00174": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00255": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00264": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00280": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00308": (("score",), EXACT_MATCH_STRIP),
    "exact_match/00328": (("score",), EXACT_MATCH_STRIP),
    "mmmu_aggregate/00000": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00002": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00003": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00004": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00005": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00006": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00008": (("mmmu_accuracy",), MMMU_ROUNDED),
    "mmmu_aggregate/00009": (("mmmu_accuracy",), MMMU_ROUNDED),
    "ocrbench_aggregate/00001": (("ocrbench_accuracy", "ocrbench_scores"), OCRBENCH_TWICE),
    "ocrbench_aggregate/00002": (("ocrbench_accuracy",), OCRBENCH_1000),
    "ocrbench_aggregate/00003": (("ocrbench_accuracy",), OCRBENCH_1000),
    "ocrbench_aggregate/00004": (("ocrbench_accuracy",), OCRBENCH_1000),
}

# ------------------------------------------------------------------ comparing


def same(a: Any, b: Any) -> bool:
    """Equal, floats within TOLERANCE; NaN equals NaN and None (JSON has no NaN)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= TOLERANCE
    if a is None or b is None:
        other = b if a is None else a
        return other is None or (isinstance(other, float) and math.isnan(other))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@dataclass
class KindReport:
    compared: int = 0
    agreed: int = 0
    diverged: dict[str, tuple[str, ...]] = field(default_factory=dict)


def differing_fields(
    case: Case, orch: dict[str, Callable[[Case], Outputs]] = ORCH
) -> tuple[str, ...]:
    try:
        got = orch[case["kind"]](case["input"])
    except Exception as e:  # noqa: BLE001 - a crash on one case is reported with its key
        return (f"<{type(e).__name__}: {e}>",)
    expected = case["expected"]
    return tuple(sorted(k for k in expected if k not in got or not same(got[k], expected[k])))


def compare(
    cases: Iterable[Case], orch: dict[str, Callable[[Case], Outputs]] = ORCH
) -> dict[str, KindReport]:
    reports: dict[str, KindReport] = {}
    for case in cases:
        report = reports.setdefault(case["kind"], KindReport())
        report.compared += 1
        fields = differing_fields(case, orch)
        if fields:
            report.diverged[case["key"]] = fields
        else:
            report.agreed += 1
    return reports


def load(path: Path) -> tuple[dict[str, Any], list[Case]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows[0], rows[1:]


def summary(reports: dict[str, KindReport]) -> str:
    lines = [f"{'kind':24} {'metric':30} {'compared':>8} {'agreed':>7} {'documented':>10}"]
    for kind, r in sorted(reports.items()):
        metric = METRIC_OF.get(kind, kind)
        lines.append(f"{kind:24} {metric:30} {r.compared:8} {r.agreed:7} {len(r.diverged):10}")
    return "\n".join(lines)


def unexplained(cases: list[Case], reports: dict[str, KindReport]) -> list[str]:
    """Disagreements no divergence rule accounts for: '<key>: <fields>' each."""
    by_key = {c["key"]: c for c in cases}
    out = []
    for r in reports.values():
        for key, fields in r.diverged.items():
            allowed = divergence_rules(by_key[key])
            if not set(fields) <= set(allowed):
                out.append(f"{key}: {', '.join(f for f in fields if f not in allowed)}")
    return out


# ------------------------------------------------------------------ (a) the checked-in table


@pytest.fixture(scope="module")
def table() -> tuple[dict[str, Any], list[Case], dict[str, KindReport]]:
    header, cases = load(TABLE)
    return header, cases, compare(cases)


def test_golden_table_agrees_with_lmms_eval(
    table: tuple[dict[str, Any], list[Case], dict[str, KindReport]],
) -> None:
    header, cases, reports = table
    logger.info("orch vs lmms-eval %s (seed %s):\n%s", header["lmms_eval"], header["seed"],
                summary(reports))  # fmt: skip
    assert unexplained(cases, reports) == []
    diverged = {k: f for r in reports.values() for k, f in r.diverged.items()}
    assert diverged == {k: fields for k, (fields, _) in DOCUMENTED.items()}


def test_every_documented_divergence_has_its_reason(
    table: tuple[dict[str, Any], list[Case], dict[str, KindReport]],
) -> None:
    _, cases, _ = table
    by_key = {c["key"]: c for c in cases}
    for key, (fields, reason) in DOCUMENTED.items():
        rules = divergence_rules(by_key[key])
        assert {rules.get(f) for f in fields} == {reason}, key


def test_the_table_covers_every_metric(
    table: tuple[dict[str, Any], list[Case], dict[str, KindReport]],
) -> None:
    header, cases, reports = table
    assert header["lmms_eval"] == "0.7.3"
    assert set(reports) == set(ORCH)
    exercised = {METRIC_OF.get(k, k) for k in reports}
    exercised |= {m.strip() for e in exercised for m in e.split(",")}
    untested = {"accuracy", "loss", "top5_accuracy", "mme_accuracy_plus"}  # no lmms-eval twin
    assert set(METRICS) - untested <= exercised
    assert len(cases) > 5000
    assert TABLE.stat().st_size < 2_200_000


def test_a_mutated_case_is_caught(tmp_path: Path) -> None:
    """One expected output changed in a temporary copy of the table fails the comparison."""
    header, cases = load(TABLE)
    victims = {"anls": "score", "mcq_accuracy": "parsed", "mme_aggregate": "mme_perception"}
    mutated = []
    for case in cases:
        name = victims.pop(case["kind"], None)
        if name is not None:
            old = case["expected"][name]
            case["expected"][name] = old + 0.001 if isinstance(old, float) else "Z"
            mutated.append(case["key"])
    copy = tmp_path / "cases.jsonl"
    copy.write_text("".join(json.dumps(row) + "\n" for row in [header, *cases]))
    _, again = load(copy)
    reports = compare(c for c in again if c["key"] in mutated)
    assert len(mutated) == 3
    assert sorted(k for r in reports.values() for k in r.diverged) == sorted(mutated)
    assert len(unexplained(again, reports)) == 3


def test_a_broken_metric_is_caught() -> None:
    _, cases = load(TABLE)
    sample = [c for c in cases if c["kind"] in ("evalai_processor", "relaxed_accuracy")][:400]
    broken = {
        **ORCH,
        "evalai_processor": lambda i: {"processed": i["text"].lower().strip()},
        "relaxed_accuracy": lambda r: {"score": float(r["prediction"] == r["references"][0])},
    }
    reports = compare(sample, broken)
    assert all(r.diverged for r in reports.values())
    assert compare(sample)["evalai_processor"].diverged == {}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_lmms_metric_cases", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_seeds_lmms_eval_as_orch_seeds_itself() -> None:
    """The table sets lmms-eval's global random state to orch's per-sample seed (divergence 5 in
    workers/metrics): the generator's copy of the seed must stay orch's."""
    gen = _generator()
    for record in [
        {"id": "validation_Art_3", "prediction": "x", "options": ["a", "b"]},
        {"prediction": "I am not sure", "options": ["red", "blue", "green"]},
    ]:
        ours, theirs = sample_rng(record), random.Random(gen.orch_seed(record))
        assert [ours.random() for _ in range(3)] == [theirs.random() for _ in range(3)]


# ------------------------------------------------------------------ (b) lmms-eval itself, new seed


def _lmms_eval_missing() -> str | None:
    if not LMMS_PYTHON.exists():
        return f"{LMMS_PYTHON.relative_to(ROOT)} is missing (make lmms builds it)"
    probe = subprocess.run(
        [str(LMMS_PYTHON), "-c", "import importlib.metadata as m; print(m.version('lmms_eval'))"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if probe.returncode != 0 or probe.stdout.strip() != "0.7.3":
        return f"lmms-eval 0.7.3 is not installed in {LMMS_PYTHON} ({probe.stderr.strip()[-200:]})"
    return None


@pytest.mark.slow
def test_fresh_cases_from_lmms_eval_agree(tmp_path: Path) -> None:
    missing = _lmms_eval_missing()
    if missing:
        pytest.skip(missing)
    seed = int(os.environ.get("ORCH_LMMS_SEED", random.SystemRandom().randrange(1, 2**31)))
    out = tmp_path / "fresh.jsonl"
    command = [str(LMMS_PYTHON), str(GENERATOR), "--seed", str(seed), "--scale", "0.3"]
    run = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=900, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _, cases = load(out)
    reports = compare(cases)
    logger.info("fresh seed %d:\n%s", seed, summary(reports))
    bad = unexplained(cases, reports)
    assert bad == [], f"seed {seed} (ORCH_LMMS_SEED={seed} reruns it; cases in {out}): {bad[:20]}"

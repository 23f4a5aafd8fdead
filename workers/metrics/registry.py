"""orch's metrics as registry entries: how each reads one sample record (the process_results
step of its lmms-eval task, the prediction stripped as lmms-eval's api/task.py hands it over) and,
for the benchmarks whose score is not a mean of per-sample scores, how a dataset's records
aggregate."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from orchestrator.contract.metrics import Metric as M
from orchestrator.contract.metrics import MetricValue, SampleRecord, mean_with_stderr
from workers.metrics.choice import (
    eval_multi_choice,
    get_multi_choice_info,
    mmstar_exact_match,
    parse_multi_choice_response,
    sqa_exact_match,
)
from workers.metrics.mmbench import mmbench_circular_hits, mmbench_row_hit
from workers.metrics.mme import is_perception, mme_acc_plus, mme_aggregate_results, mme_score
from workers.metrics.mmmu import eval_open, parse_open_response
from workers.metrics.ocrbench import ocrbench_dataset, ocrbench_score
from workers.metrics.text import (
    anls_score,
    exact_match_score,
    relaxed_correctness,
    token_f1_score,
)
from workers.metrics.vqa import vqa_accuracy_score


def sample_rng(record: SampleRecord) -> random.Random:
    """The random state for a prediction that names no option (MMMU's parser then guesses, as
    lmms-eval does): seeded by the sample's ``id``, else by its prediction and options, so the
    same sample guesses the same letter in every process and every checkpoint's eval."""
    if "id" in record:
        return random.Random(f"orch-mcq:{record['id']}")
    return random.Random("orch-mcq:" + "\x1f".join([record["prediction"], *record["options"]]))


def vqa_answers(record: SampleRecord) -> Sequence[str]:
    """The annotators' answers: ``references`` (the vqa kind's), or ``answers`` where a record
    names them so (as orch's first vqa_accuracy read them)."""
    return record["answers"] if "answers" in record else record["references"]


def mcq_score(record: SampleRecord) -> float:
    """MMMU's ``parse_multi_choice_response`` on the prediction, against the gold letter."""
    index2ans, all_choices = get_multi_choice_info(record["options"])
    pred = parse_multi_choice_response(
        record["prediction"].strip(), all_choices, index2ans, rng=sample_rng(record)
    )
    return float(eval_multi_choice(record["answer"], pred))


def mmmu_score(record: SampleRecord) -> float:
    """tasks/mmmu/utils.py ``mmmu_process_results`` + ``evaluate_mmmu`` for one question:
    ``question_type`` "multiple-choice" (the default when the record has none) or open."""
    if record.get("question_type", "multiple-choice") == "multiple-choice":
        return mcq_score(record)
    return float(eval_open(record["answer"], parse_open_response(record["prediction"].strip())))


def mmmu_open_score(record: SampleRecord) -> float:
    """An MMMU open question recorded by the vqa kind (its answer in ``references``)."""
    return float(
        eval_open(list(record["references"]), parse_open_response(record["prediction"].strip()))
    )


def ocrbench_record_score(record: SampleRecord) -> float:
    dataset = ocrbench_dataset(record["category"], record.get("dataset"))
    return float(ocrbench_score(record["prediction"], record["references"], dataset))


def mme_record_score(record: SampleRecord) -> float:
    """The gold yes/no is ``answer``, else the first of ``references`` (the vqa kind's)."""
    gold = record["answer"] if "answer" in record else record["references"][0]
    return mme_score(record["prediction"].strip(), gold)


def _mme_image(record: SampleRecord) -> str:
    """MME's ``question_id`` (the image both questions share), else the record's ``group``."""
    image = record.get("question_id", record.get("group"))
    if image is None:
        raise ValueError(
            f"MME record {record.get('id', '?')!r} names no image: MME pairs the two questions "
            "of an image by question_id (or group)"
        )
    return str(image)


def _mme_results(records: Sequence[SampleRecord]) -> list[dict[str, Any]]:
    return [
        {"question_id": _mme_image(r), "category": r["category"], "score": mme_record_score(r)}
        for r in records
    ]


def _no_stderr(value: float, n: int) -> MetricValue:
    """A benchmark score that is not a mean: lmms-eval reports no stderr for it ("N/A")."""
    return MetricValue(value, math.nan, n) if n else MetricValue(math.nan, math.nan, 0)


def mme_perception(records: Sequence[SampleRecord]) -> MetricValue:
    """The MME perception score (up to 2000) over the perception categories' records."""
    mine = [r for r in _mme_results(records) if is_perception(r["category"])]
    return _no_stderr(mme_aggregate_results(mine), len(mine))


def mme_cognition(records: Sequence[SampleRecord]) -> MetricValue:
    """The MME cognition score (up to 800) over every other category's records."""
    mine = [r for r in _mme_results(records) if not is_perception(r["category"])]
    return _no_stderr(mme_aggregate_results(mine), len(mine))


def mme_accuracy_plus(records: Sequence[SampleRecord]) -> MetricValue:
    """Share of images (pairs of questions) with both answers right; n counts images."""
    return mean_with_stderr(mme_acc_plus(_mme_results(records)))


def mmbench_accuracy(records: Sequence[SampleRecord]) -> MetricValue:
    """MMBench's circular accuracy (a fraction; lmms-eval's gpt_eval_score is it x 100) over
    questions; n counts questions. When every record has MMBench's ``index``, exactly as
    lmms-eval groups them (a question counts when its main row, index < 1e6, is there). Else by
    ``group`` (the mcq kind's: the base index), every group present counting, a record without
    one a question of its own."""
    if records and all("index" in r for r in records):
        rows = [{**r, "prediction": r["prediction"].strip()} for r in records]
        return mean_with_stderr(list(mmbench_circular_hits(rows).values()))
    groups: dict[Any, list[float]] = {}
    for i, r in enumerate(records):
        key = ("group", r["group"]) if r.get("group") is not None else ("row", i)
        hit = mmbench_row_hit(r["prediction"].strip(), r["options"], r["answer"])
        groups.setdefault(key, []).append(hit)
    return mean_with_stderr([float(all(hits)) for hits in groups.values()])


def mmstar_accuracy(records: Sequence[SampleRecord]) -> MetricValue:
    """tasks/mmstar/utils.py "average": the mean over categories of each category's accuracy
    (``category`` holding MMStar's l2_category, as lmms-eval groups it)."""
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(mmstar_exact_match(r["prediction"].strip(), r["answer"]))
    if not by_category:
        return MetricValue(math.nan, math.nan, 0)
    means = [sum(s) / len(s) for s in by_category.values()]
    return _no_stderr(sum(means) / len(means), len(records))


def builtin_metrics() -> tuple[M, ...]:
    """orch's metrics, declared once (name, per-sample score, direction, the record fields they
    read). Each dataset kind declares which it reports; a dataset may list others its records
    support."""

    def needs(*fields: str) -> frozenset[str]:
        return frozenset(fields)

    text = needs("prediction", "references")
    choice = needs("prediction", "options", "answer")
    # MME comes as vqa records: gold in references, the image in group (answer and question_id,
    # where a record has them, come first)
    mme = needs("prediction", "references", "category", "group")
    return (
        M("accuracy", lambda r: float(r["correct"]), True, needs("correct"),
          description="share of samples right (the argmax class; generated answers: exact match)"),
        M("loss", lambda r: float(r["loss"]), False, needs("loss"), description="mean loss"),
        M("top5_accuracy", lambda r: float(r["top5"]), True, needs("top5"),
          description="label among the 5 highest masked logits"),
        M("exact_match", lambda r: exact_match_score(r["prediction"], r["references"]), True,
          text, description="lmms-eval exact_match (case-insensitive, stripped)"),
        M("anls", lambda r: anls_score(r["prediction"].strip(), r["references"]), True, text,
          description="lmms-eval anls (DocVQA, InfoVQA), threshold 0.5"),
        M("relaxed_accuracy",
          lambda r: float(relaxed_correctness(r["prediction"].strip(), r["references"][0])),
          True, text, description="lmms-eval relaxed_correctness (ChartQA), 5 % tolerance"),
        M("token_f1", lambda r: token_f1_score(r["prediction"], r["references"]), True, text,
          description="SQuAD token F1, best over the references"),
        M("vqa_accuracy", lambda r: vqa_accuracy_score(r["prediction"], vqa_answers(r)), True,
          text, description="TextVQA/OK-VQA/VizWiz accuracy over the annotators' answers (EvalAI)"),
        M("vqav2_accuracy",
          lambda r: vqa_accuracy_score(r["prediction"], vqa_answers(r), "vqav2"), True, text,
          description="VQAv2 accuracy over the annotators' answers (lmms-eval vqav2 processor)"),
        M("mcq_accuracy", mcq_score, True, choice,
          description="option letter parsed as MMMU does (parse_multi_choice_response)"),
        M("mmmu_accuracy", mmmu_score, True, choice,
          description="MMMU eval_multi_choice / eval_open by question_type"),
        M("mmmu_open_accuracy", mmmu_open_score, True, text,
          description="MMMU open questions: parse_open_response + eval_open on the references"),
        M("mmbench_accuracy",
          lambda r: mmbench_row_hit(r["prediction"].strip(), r["options"], r["answer"]), True,
          choice, aggregate=mmbench_accuracy,
          description="MMBench circular accuracy, no judge (mmbench_en_dev_static), a fraction"),
        M("mmstar_accuracy", lambda r: mmstar_exact_match(r["prediction"].strip(), r["answer"]),
          True, needs("prediction", "answer", "category"), aggregate=mmstar_accuracy,
          description="MMStar average: mean over (l2) categories of their accuracy"),
        M("scienceqa_accuracy", lambda r: sqa_exact_match(r["prediction"], r["answer"]), True,
          needs("prediction", "answer"), description="ScienceQA letter match (LLaVA's rule)"),
        M("ocrbench_accuracy", ocrbench_record_score, True,
          needs("prediction", "references", "category"),
          description="OCRBench: share of questions whose answer occurs in the prediction"),
        M("mme_perception", mme_record_score, True, mme, aggregate=mme_perception,
          description="MME perception score (acc + acc+ per category, x 100, summed; max 2000)"),
        M("mme_cognition", mme_record_score, True, mme, aggregate=mme_cognition,
          description="MME cognition score (acc + acc+ per category, x 100, summed; max 800)"),
        M("mme_accuracy", mme_record_score, True, needs("prediction", "references"),
          description="MME: share of yes/no questions right"),
        M("mme_accuracy_plus", mme_record_score, True, mme, aggregate=mme_accuracy_plus,
          description="MME: share of images with both questions right"),
    )  # fmt: skip


def register_builtin_metrics() -> None:
    """Register orch's metrics in orchestrator.contract.metrics."""
    from orchestrator.contract.metrics import register_metric

    for metric in builtin_metrics():
        register_metric(metric)

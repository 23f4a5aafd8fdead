"""Eval metrics defined as lmms-eval 0.7.3 defines them, each with its standard error.

Matched against lmms-eval 0.7.3 (the wheel from PyPI: read, never imported here; ``make lmms``
builds a venv with it, and tests/golden/make_lmms_metric_cases.py records what its own functions
return on thousands of inputs, which tests/test_lmms_metrics.py checks these against). Functions
carry lmms-eval's names where it has one, so a port from lmms-eval finds them:

- base: ``mean_with_stderr`` (api/metrics.py ``mean`` / ``mean_stderr``: sample standard
  deviation over sqrt(n); 0.0 for one sample, where lmms-eval says "N/A").
- text: ``exact_match_hf_evaluate`` (every option: regexes_to_ignore, ignore_case,
  ignore_punctuation, ignore_numbers), ``exact_match``, ``anls_score`` (api/metrics.py ``anls``),
  ``levenshtein_distance``, ``relaxed_correctness`` (ChartQA), ``f1_score`` (SQuAD).
- vqa: ``EvalAIAnswerProcessor``, ``vqa_accuracy_score`` (TextVQA / VQAv2 process_results).
- choice: ``parse_multi_choice_response``, ``get_multi_choice_info``, ``eval_multi_choice`` (MMMU),
  ``extract_mcq_answer`` (mcq_extract), ``mmstar_exact_match``, ``sqa_exact_match`` (ScienceQA).
- mmmu: ``parse_open_response``, ``eval_open``, ``normalize_str``, ``extract_numbers``,
  ``check_is_number``, ``evaluate_mmmu``, ``calculate_ins_level_acc``, ``mmmu_aggregate_results``.
- mmbench: ``can_infer_option``, ``can_infer_text``, ``can_infer`` and the static (no judge)
  circular evaluation.
- ocrbench: ``ocrbench_score`` (``ocrbench_process_results``), ``ocrbench_scores``,
  ``ocrbench_aggregate_accuracy``. mme: ``parse_pred_ans``, ``mme_aggregate_results``.

Every per-sample score follows its task's ``process_results`` on the prediction as api/task.py
hands it over (stripped). The registry's entries and the record fields they read are in
``registry.builtin_metrics``: vqa records hold the annotators' answers in ``references`` and
MME's image in ``group`` (or ``question_id``); an OCRBench record's ``category`` picks the
formula rule (HME100k's) unless it names its ``dataset``; an MMMU record without
``question_type`` is multiple-choice.

Where orch deliberately differs from lmms-eval (each also noted where it happens;
tests/test_lmms_metrics.py lists the cases of the golden table they touch):

1. ``exact_match`` (registry): the references are stripped as well as the prediction (lmms-eval
   strips the prediction only, so a reference with outer whitespace never matches), and
   lower-casing is Python's (``exact_match_hf_evaluate`` keeps numpy's, which cuts a lower case
   longer than its upper case, "İ" -> "i̇", to the array's width).
2. ``ocrbench_accuracy`` / ``ocrbench_aggregate_accuracy``: the count right over the samples
   scored, computed afresh (lmms-eval divides by 1000 whatever the sample count, and keeps its
   totals at module level, so a second aggregation in one process double-counts).
3. ``mmmu_accuracy`` (registry): the unrounded mean (lmms-eval's ``mmmu_aggregate_results``, also
   here under that name, rounds to 5 decimals).
4. ``mmbench_accuracy``: a fraction, as orch's other accuracies (lmms-eval's gpt_eval_score is
   the same value x 100). A missing option is absent (lmms-eval's DataFrame may hold the string
   "nan" for it, whose text then "occurs" in answers such as "financial"). Records grouped by
   ``group`` (the mcq kind's; no ``index``) count every group present, where lmms-eval counts a
   question only when its main row (index < 1e6) is there: the same on a whole dev set.
5. A prediction that names no option (MMMU's parser guesses at random): lmms-eval draws from the
   global random state (seeded once per run, so the letter depends on the sample's place in the
   run); orch's metrics draw from a state seeded per sample (``registry.sample_rng``). The golden
   table sets lmms-eval's global state to that seed, so the two agree on every case.
6. MME: an image with other than two questions raises ValueError (lmms-eval: AssertionError), as
   does a gold answer other than yes/no. The scores carry no stderr (NaN; lmms-eval "N/A"). A
   category outside the perception ten counts toward cognition, as in lmms-eval.
7. VQAv2 leaves out the i-th answer by position; lmms-eval leaves out every answer dict equal to
   it, the same thing for VQAv2's answers (each has its own ``answer_id``).
"""

from workers.metrics.base import Metric, mean_with_stderr
from workers.metrics.choice import (
    eval_multi_choice,
    extract_mcq_answer,
    get_multi_choice_info,
    mmstar_exact_match,
    parse_multi_choice_response,
    sqa_exact_match,
)
from workers.metrics.classification import (
    accuracy,
    mean_loss,
    per_class_accuracy,
    top_k_accuracy,
)
from workers.metrics.mmbench import (
    can_infer,
    can_infer_option,
    can_infer_text,
    mmbench_circular_hits,
    mmbench_row_hit,
    mmbench_row_letter,
)
from workers.metrics.mme import (
    mme_aggregate_results,
    mme_category_scores,
    mme_score,
    parse_pred_ans,
)
from workers.metrics.mmmu import (
    calculate_ins_level_acc,
    check_is_number,
    eval_open,
    evaluate_mmmu,
    extract_numbers,
    extract_subset_name,
    mmmu_aggregate_results,
    normalize_str,
    parse_open_response,
)
from workers.metrics.ocrbench import (
    fold_fullwidth_ascii,
    ocrbench_aggregate_accuracy,
    ocrbench_score,
    ocrbench_scores,
)
from workers.metrics.registry import builtin_metrics, register_builtin_metrics
from workers.metrics.text import (
    anls,
    anls_score,
    exact_match,
    exact_match_hf_evaluate,
    exact_match_score,
    f1_score,
    levenshtein,
    levenshtein_distance,
    relaxed_accuracy,
    relaxed_correctness,
    token_f1,
    token_f1_score,
)
from workers.metrics.vqa import (
    EvalAIAnswerProcessor,
    vqa_accuracy,
    vqa_accuracy_score,
    vqa_normalize,
)

__all__ = [
    "EvalAIAnswerProcessor",
    "Metric",
    "accuracy",
    "anls",
    "anls_score",
    "builtin_metrics",
    "calculate_ins_level_acc",
    "can_infer",
    "can_infer_option",
    "can_infer_text",
    "check_is_number",
    "eval_multi_choice",
    "eval_open",
    "evaluate_mmmu",
    "exact_match",
    "exact_match_hf_evaluate",
    "exact_match_score",
    "extract_mcq_answer",
    "extract_numbers",
    "extract_subset_name",
    "f1_score",
    "fold_fullwidth_ascii",
    "get_multi_choice_info",
    "levenshtein",
    "levenshtein_distance",
    "mean_loss",
    "mean_with_stderr",
    "mmbench_circular_hits",
    "mmbench_row_hit",
    "mmbench_row_letter",
    "mme_aggregate_results",
    "mme_category_scores",
    "mme_score",
    "mmmu_aggregate_results",
    "mmstar_exact_match",
    "normalize_str",
    "ocrbench_aggregate_accuracy",
    "ocrbench_score",
    "ocrbench_scores",
    "parse_multi_choice_response",
    "parse_open_response",
    "parse_pred_ans",
    "per_class_accuracy",
    "register_builtin_metrics",
    "relaxed_accuracy",
    "relaxed_correctness",
    "sqa_exact_match",
    "token_f1",
    "token_f1_score",
    "top_k_accuracy",
    "vqa_accuracy",
    "vqa_accuracy_score",
    "vqa_normalize",
]

"""The job spec: every shipped job parses, errors name the dotted key, overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.contract.errors import SpecError
from orchestrator.contract.spec import JobSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.toml"))

MINIMAL = """
name = "t"
[model]
path = "m"
[datasets.a]
train = "a/train.jsonl"
eval = "a/test.jsonl"
num_classes = 3
[datasets.b]
train = "b/train.jsonl"
eval = "b/test.jsonl"
num_classes = 7
[training]
max_steps = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_shipped_job_parses(job: Path) -> None:
    spec = load_spec(job)
    assert spec.datasets
    assert spec.training.deepspeed_config.is_absolute()


def test_food_mix_expresses_the_production_job() -> None:
    spec = load_spec(ROOT / "jobs" / "food_mix.toml")
    assert {n: d.num_classes for n, d in spec.datasets.items()} == {
        "food101": 101,
        "food172": 172,
        "foodx251": 251,
        "food2k": 2000,
        "fru92": 92,
        "veg200": 200,
    }
    assert spec.num_labels == 2000
    assert spec.training.num_workers == 8 and spec.training.bf16 and spec.training.use_gpu
    assert spec.training.deepspeed_config.name == "zero2.json"


def test_defaults_and_num_labels(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.num_labels == 7
    assert spec.best.resolved_mode == "max"
    assert spec.training.num_workers == 2
    assert spec.model.path == (Path.cwd() / "m").resolve()


def test_unknown_key_names_dotted_path_line_and_suggestion(tmp_path: Path) -> None:
    text = MINIMAL.replace("max_steps = 10", "max_steps = 10\nlerning_rate = 0.1")
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    msg = str(e.value)
    assert "training.lerning_rate: unknown key" in msg
    line = text.splitlines().index("lerning_rate = 0.1") + 1
    assert f"job.toml:{line}:" in msg


def test_unknown_key_in_a_dataset_table(tmp_path: Path) -> None:
    text = MINIMAL.replace("num_classes = 3", "num_classes = 3\nevalratio = 0.5")
    with pytest.raises(
        SpecError,
        match=r"datasets\.a\.evalratio: unknown key; did you mean datasets\.a\.eval_ratio\?",
    ):
        load_spec(write(tmp_path, text))


def test_wrong_type_and_range(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"training\.batch_size: .*integer.*\(got 'lots'\)"):
        load_spec(write(tmp_path, MINIMAL), ["training.batch_size=lots"])
    with pytest.raises(SpecError, match=r"datasets\.a\.eval_ratio: .*less than or equal to 1"):
        load_spec(write(tmp_path, MINIMAL), ["datasets.a.eval_ratio=1.5"])


def test_missing_key_and_steps_xor_epochs(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"job\.toml:\d+: datasets\.a\.num_classes: required key is missing for a "
        r"classification dataset",
    ):
        load_spec(write(tmp_path, MINIMAL.replace("num_classes = 3\n", "")))
    with pytest.raises(SpecError, match=r"exactly one of training\.max_steps and training\.epochs"):
        load_spec(write(tmp_path, MINIMAL), ["training.epochs=2"])


def test_num_labels_smaller_than_a_dataset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"model\.num_labels \(5\) is smaller than datasets\.b\.num_classes \(7\)"
    ):
        load_spec(write(tmp_path, MINIMAL), ["model.num_labels=5"])


def test_best_metric_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"best\.metric .c_accuracy. is not one of"):
        load_spec(write(tmp_path, MINIMAL), ["best.metric=c_accuracy"])
    spec = load_spec(write(tmp_path, MINIMAL), ["best.metric=b_loss"])
    assert spec.best.resolved_mode == "min"


def test_overrides_take_precedence_and_parse_toml_values(tmp_path: Path) -> None:
    spec = load_spec(
        write(tmp_path, MINIMAL),
        [
            "training.lr=1e-4",
            "tracking.mode=disabled",
            "training.bf16=true",
            "tracking.tags=['x', 'y']",
        ],
    )
    assert spec.training.lr == 1e-4
    assert spec.tracking.mode == "disabled"
    assert spec.training.bf16 is True
    assert spec.tracking.tags == ["x", "y"]
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(write(tmp_path, MINIMAL), ["training.lr"])
    with pytest.raises(SpecError, match=r"training\.lrr: unknown key; did you mean training\.lr\?"):
        load_spec(write(tmp_path, MINIMAL), ["training.lrr=1"])


def test_resolved_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    again = JobSpec.model_validate(spec.to_toml_dict())
    assert again == spec


EVAL_ONLY = """
[datasets.bench]
kind = "mcq"
eval = "bench/eval.jsonl"
"""


def test_a_dataset_without_train_is_eval_only(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL + EVAL_ONLY))
    assert list(spec.trained) == ["a", "b"] and list(spec.datasets) == ["a", "b", "bench"]
    assert spec.datasets["bench"].train is None and not spec.datasets["bench"].trained
    with pytest.raises(SpecError, match=r"eval-only .* no train split"):
        spec.datasets["bench"].manifest("train")


def test_eval_only_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"datasets\.bench.*weight: an eval-only dataset .* remove weight"
    ):
        load_spec(write(tmp_path, MINIMAL + EVAL_ONLY + "weight = 2.0\n"))
    with pytest.raises(SpecError, match=r"datasets\.a.*train: a classification dataset"):
        load_spec(write(tmp_path, MINIMAL.replace('train = "a/train.jsonl"\n', "")))
    only = MINIMAL.split("[datasets.a]")[0] + EVAL_ONLY + "[training]\nmax_steps = 10\n"
    with pytest.raises(SpecError, match=r"none has a train manifest, so there is nothing"):
        load_spec(write(tmp_path, only))


def test_a_resolved_spec_with_an_eval_only_dataset_validates_again(tmp_path: Path) -> None:
    """What the training workers and eval parts read: the resolved spec, validated again."""
    from orchestrator.contract.spec import validate_spec

    spec = load_spec(write(tmp_path, MINIMAL + EVAL_ONLY))
    again = validate_spec(spec.to_toml_dict())
    assert again.datasets["bench"].train is None and list(again.trained) == ["a", "b"]
    assert again.datasets["a"].mix_weight == 1.0 and again.datasets["bench"].mix_weight == 0.0


def test_batch_tokens_is_whole_rows_of_a_packed_kind_and_needs_max_steps(tmp_path: Path) -> None:
    vqa = MINIMAL.replace(
        '[datasets.b]\ntrain = "b/train.jsonl"\neval = "b/test.jsonl"\nnum_classes = 7\n',
        '[datasets.b]\nkind = "vqa"\ntrain = "b/train.jsonl"\neval = "b/test.jsonl"\n',
    )
    job = write(tmp_path, vqa)
    spec = load_spec(job, ["training.batch_tokens=8192", "training.pack_max_tokens=4096"])
    assert spec.training.pack_rows == 2 and spec.token_packed == ["b"]
    with pytest.raises(SpecError, match=r"batch_tokens \(5000\) is not a multiple of .*4096"):
        load_spec(job, ["training.batch_tokens=5000"])
    with pytest.raises(SpecError, match=r"training.epochs with training.batch_tokens"):
        load_spec(
            write(tmp_path, vqa.replace("max_steps = 10", "epochs = 1.0")),
            ["training.batch_tokens=4096"],
        )
    with pytest.raises(SpecError, match=r"no trained dataset is of a kind that packs"):
        load_spec(write(tmp_path, MINIMAL), ["training.batch_tokens=4096"])
    with pytest.raises(SpecError, match=r"pack_buffer_tokens is the packing buffer"):
        load_spec(write(tmp_path, MINIMAL), ["training.pack_buffer_tokens=4096"])

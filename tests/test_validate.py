"""`orch validate` rejects each kind of bad row, naming the file and line (or the TOML key), with
a non-zero exit; a good job prints its per-dataset statistics."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from orchestrator.cli import main
from tests.helpers.jobs import demo_job


def good_row(demo_data: Path, i: int = 0) -> dict[str, object]:
    return json.loads((demo_data / "faces" / "train.jsonl").read_text().splitlines()[i])


def job_with_faces_rows(
    tmp_path: Path, demo_data: Path, tiny_model: Path, lines: list[str]
) -> Path:
    job = demo_job(tmp_path, demo_data, tiny_model)
    manifest = tmp_path / "faces_train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    raw = tomllib.loads(job.read_text())
    raw["datasets"]["faces"]["train"] = str(manifest)
    job.write_text(tomli_w.dumps(raw))
    return job


def run_validate(job: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["validate", str(job), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("{not json", "malformed JSON"),
        ({"image_path": "x.png", "dataset_name": "faces"}, "missing field(s) label"),
        ({"label": 7}, "label 7 outside [0, 2) of dataset faces"),
        ({"dataset_name": "cars"}, "unknown dataset 'cars' (configured datasets: digits, faces"),
        ({"image_path": "/nonexistent/x.png"}, "image /nonexistent/x.png not found"),
        ({"id": "dup"}, "duplicate id 'dup' (first on line 1)"),
    ],
)
def test_each_bad_row_is_named_with_file_and_line(
    tmp_path: Path,
    demo_data: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    bad: object,
    expected: str,
) -> None:
    first = good_row(demo_data, 0) | ({"id": "dup"} if bad == {"id": "dup"} else {})
    second = bad if isinstance(bad, str) else json.dumps(good_row(demo_data, 1) | bad)  # type: ignore[operator]
    if isinstance(bad, dict) and "label" not in bad and "image_path" in bad and len(bad) == 2:
        second = json.dumps(bad)  # the missing-field row is exactly as given
    job = job_with_faces_rows(tmp_path, demo_data, tiny_model, [json.dumps(first), second])
    code, out = run_validate(job, capsys)
    assert code != 0
    assert f"{tmp_path / 'faces_train.jsonl'}:2: {expected}" in out, out


def test_a_corrupt_image_is_found_by_decoding(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = Path(str(good_row(demo_data, 1)["image_path"]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])  # truncated
    row = good_row(demo_data, 1) | {"image_path": str(broken)}
    job = job_with_faces_rows(
        tmp_path, demo_data, tiny_model, [json.dumps(good_row(demo_data, 0)), json.dumps(row)]
    )
    code, out = run_validate(job, capsys)
    assert code != 0
    assert f"{tmp_path / 'faces_train.jsonl'}:2: image {broken} does not decode" in out, out


def test_num_labels_too_small_names_the_toml_key(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model)
    code, out = run_validate(job, capsys, "--set", "model.num_labels=5")
    assert code != 0
    assert "model.num_labels (5) is smaller than datasets.digits.num_classes (10)" in out, out


def test_a_good_job_prints_statistics_and_sample_limits_decoding(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = demo_job(tmp_path, demo_data, tiny_model)
    code, out = run_validate(job, capsys)
    assert code == 0, out
    digits_train = sum(1 for _ in (demo_data / "digits" / "train.jsonl").open())
    digits_test = sum(1 for _ in (demo_data / "digits" / "test.jsonl").open())
    row = next(line for line in out.splitlines() if "digits" in line)
    assert str(digits_train) in row and "50.0%" in row  # weight 2 of 4
    assert str(digits_train + digits_test) in row  # every image decoded
    code, out = run_validate(job, capsys, "--sample", "3")
    row = next(line for line in out.splitlines() if "digits" in line)
    cells = [c.strip() for c in row.strip().strip("│|").split("│")]
    assert code == 0 and cells[6] == "6" and cells[7] == "-"  # 3 per manifest; no leak


def test_parquet_and_jsonl_manifests_give_the_same_samples(demo_data: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workers.data.manifest import read_manifest

    jsonl = demo_data / "digits" / "train.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    a = read_manifest(jsonl, "digits", 10)
    b = read_manifest(parquet, "digits", 10)
    assert [(s.id, s.image_path, s.label) for s in a] == [(s.id, s.image_path, s.label) for s in b]


def test_eval_images_that_are_training_images_are_reported(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three eval rows reuse a training image's path, two a copy of one under another name: a
    warning with the counts and examples; the job stays valid (it is a warning, not an error)."""
    import shutil

    job = demo_job(tmp_path, demo_data, tiny_model)
    train = [json.loads(x) for x in (demo_data / "faces" / "train.jsonl").open()]
    evals = [json.loads(x) for x in (demo_data / "faces" / "test.jsonl").open()]
    for i in range(3):
        evals[i]["image_path"] = train[i]["image_path"]
    for i in (3, 4):
        copy = tmp_path / f"copy{i}.png"
        shutil.copy(train[10 + i]["image_path"], copy)
        evals[i]["image_path"] = str(copy)
    manifest = tmp_path / "faces_test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in evals))
    raw = tomllib.loads(job.read_text())
    raw["datasets"]["faces"]["eval"] = str(manifest)
    job.write_text(tomli_w.dumps(raw))
    code, out = run_validate(job, capsys)
    assert code == 0, out
    assert "datasets.faces.eval: 5 eval sample(s) use an image that is also in the training" in out
    assert "(2 same content, 3 same path)" in out
    assert f"{manifest}:1 image" in out


def test_vqa_accuracy_on_single_answers_is_a_warning(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """VQA accuracy leaves each reference out in turn: a row with one reference scores 0 even
    when answered right. Declared on such rows it is a warning that names the fix."""
    from tests.helpers.jobs import vqa_job

    job = vqa_job(tmp_path, demo_data, tiny_model)
    raw = tomllib.loads(job.read_text())
    raw["datasets"]["vqa_digits"]["metrics"] = ["vqa_accuracy", "exact_match"]
    job.write_text(tomli_w.dumps(raw))
    code, out = run_validate(job, capsys, "--sample", "1")
    assert code == 0, out
    rows = sum(1 for _ in (demo_data / "vqa_digits" / "train.jsonl").open())
    assert f"datasets.vqa_digits: {rows} of {rows} rows have fewer than 4 reference answers" in out
    assert "give every annotator's answer in references, or report exact_match" in out
    assert "datasets.vqa_textures:" not in out  # exact match only: nothing to warn about

"""`orch data prepare <benchmark>` on small copies of the ten lmms-eval benchmarks, with their
Hugging Face schemas, as Parquet files and as save_to_disk folders: run as a user types it (a
subprocess, the default --name), then the files written, rows, images, letters, references,
categories, groups, the printed [datasets.NAME] tables and the exit codes; and each bad source
fails naming its file and its column or row."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.contract.kinds import known_kinds
from orchestrator.contract.metrics import known_metrics
from tests.helpers import benchmark_fixtures as fx
from tests.helpers.cli import orch
from tests.helpers.paths import ROOT


def prepare(kind: str, src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    return orch("data", "prepare", kind, str(src), "--out", str(out), *extra, cwd=out.parent)


def manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tables(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return dict(tomllib.loads(proc.stdout)["datasets"])


def build_sources(root: Path) -> dict[str, Path]:
    """Every benchmark's source as a user keeps it: Parquet files (MMMU one folder per subject,
    ChartQA with an image stored as a path only), ScienceQA and MME as save_to_disk folders."""
    src = {
        "mmbench": fx.write_parquet(
            fx.table(fx.mmbench_rows(), fx.MMBENCH), root / "MMBench/en/dev-00000-of-00001.parquet"
        ).parent,
        "mmmu": fx.write_mmmu(root / "MMMU", fx.mmmu_subjects()),
        "mmstar": fx.write_parquet(
            fx.table(fx.mmstar_rows(), fx.MMSTAR), root / "MMStar/mmstar.parquet"
        ),
        "scienceqa": fx.write_dataset_dict(
            {
                "train": fx.table(fx.scienceqa_rows("train"), fx.SCIENCEQA),
                "test": fx.table(fx.scienceqa_rows("test"), fx.SCIENCEQA),
            },
            root / "ScienceQA-IMG",
        ),
        "textvqa": fx.write_parquet(
            fx.table(fx.textvqa_rows(), fx.TEXTVQA),
            root / "textvqa/data/validation-00000-of-00001.parquet",
        ).parent,
        "docvqa": fx.write_parquet(
            fx.table(fx.docvqa_rows(), fx.DOCVQA),
            root / "DocVQA/DocVQA/validation-00000-of-00001.parquet",
        ).parent,
        "infovqa": fx.write_parquet(
            fx.table(fx.infovqa_rows(), fx.INFOVQA),
            root / "DocVQA/InfographicVQA/validation-00000-of-00001.parquet",
        ).parent,
        "chartqa": fx.write_parquet(
            fx.table(fx.chartqa_rows(), fx.CHARTQA), root / "ChartQA/test-00000-of-00001.parquet"
        ),
        "ocrbench": fx.write_parquet(
            fx.table(fx.ocrbench_rows(), fx.OCRBENCH), root / "OCRBench/test-00000-of-00001.parquet"
        ),
        "mme": fx.write_save_to_disk(fx.table(fx.mme_rows(), fx.MME), root / "MME_test", "test"),
    }
    (root / "ChartQA/charts").mkdir()
    (root / "ChartQA/charts/2019.png").write_bytes(fx.image_bytes(32))
    return src


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """Each benchmark prepared once: name -> (the finished process, its --out folder)."""
    root = tmp_path_factory.mktemp("bench")
    done = {}
    for name, src in build_sources(root / "src").items():
        out = root / "data" / name
        done[name] = (prepare(name, src, out), out)
    return done


BENCHMARKS = {
    # name: (kind, metrics, rows in eval.jsonl, image files)
    "mmbench": ("mcq", ["mmbench_accuracy"], 6, 3),
    "mmmu": ("mcq", ["mmmu_accuracy"], 3, 7),
    "mmstar": ("mcq", ["mmstar_accuracy"], 3, 3),
    "scienceqa": ("mcq", ["scienceqa_accuracy"], 3, 2),
    "textvqa": ("vqa", ["vqa_accuracy", "exact_match"], 3, 2),
    "docvqa": ("vqa", ["anls"], 3, 3),
    "infovqa": ("vqa", ["anls"], 3, 3),
    "chartqa": ("vqa", ["relaxed_accuracy"], 3, 3),
    "ocrbench": ("vqa", ["ocrbench_accuracy"], 3, 3),
    "mme": ("vqa", ["mme_perception", "mme_cognition", "mme_accuracy", "mme_accuracy_plus"], 4, 2),
}


def test_the_cli_knows_every_benchmark() -> None:
    from orchestrator.cli.data import BENCHMARKS as CLI
    from workers.data.benchmarks import BENCHMARKS as DATA

    assert tuple(DATA) == CLI == tuple(BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_writes_its_manifest_images_and_table(
    name: str, prepared: dict[str, tuple[Any, Path]]
) -> None:
    proc, out = prepared[name]
    kind, metrics, n_rows, n_images = BENCHMARKS[name]
    table = tables(proc)[name]
    eval_path = out / "eval.jsonl"
    assert table["kind"] == kind and table["metrics"] == metrics
    # A benchmark is an eval-only dataset: evaluated at every checkpoint, never trained on.
    assert Path(table["eval"]) == eval_path and "train" not in table
    assert not (out / "train.jsonl").exists()
    rows = manifest(eval_path)
    assert len(rows) == n_rows
    assert len({r["id"] for r in rows}) == n_rows
    assert all(r["id"].startswith(f"{name}/") and r["dataset_name"] == name for r in rows)
    files = sorted((out / "images").iterdir())
    assert len(files) == n_images
    for f in files:  # written in their own format, and they decode
        with Image.open(f) as im:
            im.load()
            assert f.suffix == {"PNG": ".png", "JPEG": ".jpg"}[str(im.format)]
    used = {p for r in rows for p in r["images"]}
    assert used <= {str(f) for f in files} and all(Path(p).is_absolute() for p in used)
    if kind == "mcq":
        fields = {"id", "dataset_name", "images", "question", "hint", "options", "answer",
                  "category", "group"} | ({"text"} if name == "mmstar" else set())  # fmt: skip
        assert all(set(r) == fields for r in rows)
        assert all(r["answer"] in "ABCDEFGHIJ"[: len(r["options"])] for r in rows)
    else:
        assert all(r["texts"][0]["assistant"] in r["references"] for r in rows)


def test_vqa_manifests_read_back_through_orch(prepared: dict[str, tuple[Any, Path]]) -> None:
    from workers.data.vqa import read_vqa_manifest

    for name in ("textvqa", "docvqa", "infovqa", "chartqa", "ocrbench", "mme"):
        samples, _ = read_vqa_manifest(prepared[name][1] / "eval.jsonl", name)
        assert all(s.images and s.turns for s in samples)
    samples, _ = read_vqa_manifest(prepared["mmmu"][1] / "open.jsonl", "mmmu_open")
    assert len(samples) == 1


def test_mmbench_drops_empty_options_and_groups_circular_copies(
    prepared: dict[str, tuple[Any, Path]],
) -> None:
    proc, out = prepared["mmbench"]
    rows = {r["id"]: r for r in manifest(out / "eval.jsonl")}
    assert list(rows) == [f"mmbench/{i}" for i in (0, 1000000, 2000000, 1, 1000001, 2)]
    assert rows["mmbench/1000000"]["options"] == ["dog", "bird", "fish", "cat"]
    assert [rows[f"mmbench/{i}"]["answer"] for i in (0, 1000000, 2000000)] == ["B", "A", "D"]
    assert [rows[f"mmbench/{i}"]["group"] for i in (0, 1000000, 2000000, 1000001)] == [
        "0", "0", "0", "1"
    ]  # fmt: skip
    assert rows["mmbench/1"]["options"] == ["yes", "no"]  # "nan" and None dropped
    assert rows["mmbench/1"]["hint"] is None and rows["mmbench/0"]["hint"] == "A pet."
    assert rows["mmbench/2"]["options"] == ["red", "green", "blue"]  # re-lettered from A
    assert rows["mmbench/2"]["answer"] == "C"  # D was "blue"
    assert rows["mmbench/1"]["category"] == "image_emotion"
    # Circular copies of one question share its image file (identical bytes, written once).
    assert rows["mmbench/0"]["images"] == rows["mmbench/2000000"]["images"]
    assert Path(rows["mmbench/0"]["images"][0]).name == "0.png"
    assert "options that are None/NaN/'nan' (dropped): 5" in proc.stderr


def test_mmmu_multiple_choice_and_open_questions(prepared: dict[str, tuple[Any, Path]]) -> None:
    proc, out = prepared["mmmu"]
    printed = tables(proc)
    assert printed["mmmu_open"]["kind"] == "vqa"
    assert Path(printed["mmmu_open"]["eval"]) == out / "open.jsonl"
    mc = {r["id"]: r for r in manifest(out / "eval.jsonl")}
    assert list(mc) == [  # dev rows are another split, not read
        f"mmmu/validation_{q}" for q in ("Accounting_1", "Accounting_2", "Art_Theory_2")
    ]
    first = mc["mmmu/validation_Accounting_1"]
    assert first["question"] == "<image 1> What is the overhead cost per unit?"
    assert first["options"] == ["$6", "$7", "$8", "$9"] and first["answer"] == "B"
    assert first["category"] == "Accounting" and first["hint"] is None
    graphs = mc["mmmu/validation_Accounting_2"]  # markers in the options
    assert graphs["options"] == ["<image 1>", "<image 2>", "<image 3>"]
    assert [Path(p).name for p in graphs["images"]] == [
        f"validation_Accounting_2_{k}.png" for k in (1, 2, 3)
    ]
    painter = mc["mmmu/validation_Art_Theory_2"]
    assert len(painter["images"]) == 1 and painter["answer"] == "A"  # image_2 has no marker
    assert painter["category"] == "Art_Theory" and len(painter["options"]) == 5
    (open_row,) = manifest(out / "open.jsonl")
    assert open_row["id"] == "mmmu_open/validation_Art_Theory_1"
    assert open_row["texts"] == [
        {
            "user": "Compare <image 2> with <image 1>. In which century was the first painted?"
            "\n\nAnswer the question using a single word or phrase.",
            "assistant": "18th",
        }
    ]
    assert [Path(p).name for p in open_row["images"]] == [  # in marker-number order
        "validation_Art_Theory_1_1.png", "validation_Art_Theory_1_2.png"
    ]  # fmt: skip
    assert "without a marker in the text (unused, as in lmms-eval): 1" in proc.stderr


def test_mmstar_options_parsed_out_of_the_question(prepared: dict[str, tuple[Any, Path]]) -> None:
    rows = manifest(prepared["mmstar"][1] / "eval.jsonl")
    assert rows[0]["question"] == (
        "Which option describe the object relationship in the image correctly?"
    )
    assert rows[0]["options"] == [
        "The suitcase is on the book.", "The suitcase is beneath the cat.",
        "The suitcase is beneath the bed.", "The suitcase is beneath the book.",
    ]  # fmt: skip
    assert rows[1]["options"] == ["3:4", "1:2", "2, 3 and 4"] and rows[1]["answer"] == "C"
    assert rows[1]["question"].startswith("Hint: ") and rows[1]["question"].endswith("blue?")
    assert [r["category"] for r in rows] == ["coarse perception", "math", "math"]
    # The question as MMStar phrases it, kept for its own prompt (prompt_style = "mmstar").
    assert rows[0]["text"].startswith(rows[0]["question"] + "\nOptions: A: The suitcase")
    assert tables(prepared["mmstar"][0])["mmstar"]["prompt_style"] == "mmstar"


def test_scienceqa_save_to_disk_answer_index_to_letter(
    prepared: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    rows = manifest(prepared["scienceqa"][1] / "eval.jsonl")
    assert [r["answer"] for r in rows] == ["C", "A", "E"]
    assert rows[0]["question"] == "Question 0 (test)?"  # the test split by default
    assert [r["hint"] for r in rows] == [None, "Figure: a map.", None]
    assert rows[2]["images"] == [] and len(rows[0]["images"]) == 1  # no image: kept without
    assert rows[0]["category"] == "natural science"
    # A training split is the train manifest only.
    src = prepared["scienceqa"][1].parent.parent / "src" / "ScienceQA-IMG"
    proc = prepare("scienceqa", src, tmp_path / "train", "--split", "train")
    table = tables(proc)["scienceqa"]
    assert Path(table["train"]) == tmp_path / "train" / "train.jsonl" and "eval" not in table
    assert manifest(tmp_path / "train" / "train.jsonl")[0]["question"] == "Question 0 (train)?"
    assert not (tmp_path / "train" / "eval.jsonl").exists()


def test_textvqa_references_and_prompt(prepared: dict[str, tuple[Any, Path]]) -> None:
    rows = manifest(prepared["textvqa"][1] / "eval.jsonl")
    assert rows[0]["id"] == "textvqa/34602" and len(rows[0]["references"]) == 10
    assert rows[0]["texts"] == [
        {
            "user": "What is the brand of this camera?\nAnswer the question using a single word "
            "or phrase.",
            "assistant": "dakota",  # the most common of the ten
        }
    ]
    assert rows[1]["texts"][0]["user"].startswith("What does the small white text say?")
    assert rows[0]["images"] == rows[1]["images"]  # one image, two questions: one file


def test_document_and_chart_benchmarks(prepared: dict[str, tuple[Any, Path]]) -> None:
    doc = manifest(prepared["docvqa"][1] / "eval.jsonl")
    assert doc[1]["id"] == "docvqa/24580"
    assert doc[1]["texts"][0]["assistant"] == "university of california"
    assert len(doc[1]["references"]) == 3 and doc[1]["images"][0].endswith("24580.jpg")
    assert doc[0]["texts"][0]["user"].endswith("1975?\nAnswer the question using a single word "
                                               "or phrase.")  # fmt: skip
    info = manifest(prepared["infovqa"][1] / "eval.jsonl")
    assert info[1]["references"] == ["72%", "72"] and info[1]["texts"][0]["assistant"] == "72%"
    chart = manifest(prepared["chartqa"][1] / "eval.jsonl")
    assert [r["category"] for r in chart] == ["human_test", "augmented_test", "augmented_test"]
    assert chart[2]["id"] == "chartqa/0000002" and chart[2]["references"] == ["2019"]
    assert chart[0]["texts"][0]["user"] == (
        "How many food items are shown?\nAnswer the question with a single word."
    )
    with Image.open(chart[2]["images"][0]) as im:  # read from its path: no bytes stored
        assert im.getpixel((0, 0)) == (32, 223, 7)


def test_ocrbench_and_mme(prepared: dict[str, tuple[Any, Path]]) -> None:
    ocr = manifest(prepared["ocrbench"][1] / "eval.jsonl")
    assert ocr[0]["texts"][0]["user"] == "what is written in the image?"  # stripped, no suffix
    assert ocr[1]["references"] == ["x ^ { 2 }", "x^{2}"]
    assert ocr[1]["category"] == "Handwritten Mathematical Expression Recognition"
    mme = manifest(prepared["mme"][1] / "eval.jsonl")
    assert [r["id"] for r in mme] == [
        "mme/code_reasoning/0020.png#1", "mme/code_reasoning/0020.png#2",
        "mme/existence/000000006040.jpg#1", "mme/existence/000000006040.jpg#2",
    ]  # fmt: skip
    assert [r["group"] for r in mme] == [
        "code_reasoning/0020.png", "code_reasoning/0020.png",
        "existence/000000006040.jpg", "existence/000000006040.jpg",
    ]  # fmt: skip
    assert mme[0]["images"] == mme[1]["images"] != mme[2]["images"] == mme[3]["images"]
    assert Path(mme[0]["images"][0]).name == "code_reasoning_0020.png"
    assert mme[1]["texts"] == [
        {
            "user": "Is a python code shown in the picture?\nAnswer the question using a single "
            "word or phrase.",
            "assistant": "No",
        }
    ]
    assert [r["category"] for r in mme] == ["code_reasoning"] * 2 + ["existence"] * 2


# --------------------------------------------------------------------------- errors


def fails(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_a_missing_column_names_the_file_and_what_it_has(tmp_path: Path) -> None:
    t = fx.table(fx.textvqa_rows(), fx.TEXTVQA).drop_columns(["answers"])
    src = fx.write_parquet(t, tmp_path / "textvqa/validation-00000-of-00001.parquet")
    proc = prepare("textvqa", src.parent, tmp_path / "out")
    fails(proc, str(src), "'answers'", "columns found: ['image_id', 'question_id'")
    assert not (tmp_path / "out" / "eval.jsonl").exists()


def test_a_bad_mmmu_options_string_names_the_row(tmp_path: Path) -> None:
    subjects = fx.mmmu_subjects()
    subjects["Accounting"]["validation"][1]["options"] = "['$6', '$7'"
    src = fx.write_mmmu(tmp_path / "MMMU", subjects)
    proc = prepare("mmmu", src, tmp_path / "out")
    fails(
        proc,
        "1 problem(s)",
        f"{src / 'Accounting' / 'validation-00000-of-00001.parquet'}: row 2 "
        "(id validation_Accounting_2): column 'options': cannot parse \"['$6', '$7'\"",
    )
    assert not (tmp_path / "out" / "eval.jsonl").exists()


def test_an_mmmu_row_with_fewer_images_than_markers_is_an_error(tmp_path: Path) -> None:
    subjects = fx.mmmu_subjects()
    subjects["Art_Theory"]["validation"][0]["image_2"] = None  # <image 2> is in its question
    src = fx.write_mmmu(tmp_path / "MMMU", subjects)
    proc = prepare("mmmu", src, tmp_path / "out")
    fails(
        proc,
        "row 1 (id validation_Art_Theory_1): column 'image_2': <image 2> is in the text but "
        "image_2 is empty: the row has 1 image(s) (image_1)",
    )


def test_mmstar_options_that_do_not_parse_name_file_row_and_column(tmp_path: Path) -> None:
    rows = fx.mmstar_rows()
    rows[2]["question"] = "How many birds are there?\nChoices: (A) 1 (B) 2"
    src = fx.write_parquet(fx.table(rows, fx.MMSTAR), tmp_path / "mmstar.parquet")
    fails(
        prepare("mmstar", src, tmp_path / "out"),
        f"{src}: row 3 (id 2): column 'question': cannot parse options",
    )


def test_a_split_that_is_not_there_lists_those_that_are(tmp_path: Path) -> None:
    src = fx.write_mmmu(tmp_path / "MMMU", fx.mmmu_subjects())
    proc = prepare("mmmu", src, tmp_path / "out", "--split", "test")
    fails(proc, "no 'test' split among its Parquet files; splits: ['dev', 'validation']")


def test_two_configs_in_one_source_are_duplicate_ids(tmp_path: Path) -> None:
    """lmms-lab/MMBench keeps en/ and cn/ side by side: pointed at both, the same indices
    twice are an error, not a silent mix of two languages."""
    t = fx.table(fx.mmbench_rows(), fx.MMBENCH)
    for config in ("en", "cn"):
        fx.write_parquet(t, tmp_path / "MMBench" / config / "dev-00000-of-00001.parquet")
    proc = prepare("mmbench", tmp_path / "MMBench", tmp_path / "out")
    fails(proc, "6 problem(s)", "row 1: duplicate id 'mmbench/0' (first at ")


def test_max_samples_that_cut_an_mme_pair_are_reported(tmp_path: Path) -> None:
    src = fx.write_save_to_disk(fx.table(fx.mme_rows(), fx.MME), tmp_path / "mme", "test")
    proc = prepare("mme", src, tmp_path / "out", "--max-samples", "3")
    assert len(manifest(tmp_path / "out" / "eval.jsonl")) == 3
    assert "without exactly two questions (MME scores them in pairs): 1" in proc.stderr


def test_layouts_still_need_a_name(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    fails(prepare("folders", tmp_path / "src", tmp_path / "out"), "--name is required")


# --------------------------------------------------------------------------- job specs


def _not_ready(kind: str, metrics: list[str]) -> str | None:
    """Why a table cannot be validated yet (its kind, or its metrics, being built elsewhere)."""
    kinds, known = known_kinds(), known_metrics()
    if kind not in kinds:
        return f"the {kind} kind is not registered yet"
    if missing := [m for m in metrics if m not in known]:
        return f"the metrics {missing} are not registered yet"
    fields = kinds[kind].record_fields
    if lacking := {m: sorted(known[m].needs - fields) for m in metrics if known[m].needs - fields}:
        return f"the {kind} kind does not record the fields these metrics need yet: {lacking}"
    return None


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_printed_table_is_a_valid_job_section(
    name: str, prepared: dict[str, tuple[Any, Path]]
) -> None:
    from orchestrator.contract.spec import validate_spec

    metrics = BENCHMARKS[name][1]
    datasets = tables(prepared[name][0])
    for table in datasets.values():
        if (why := _not_ready(table["kind"], table["metrics"])) is not None:
            pytest.skip(why)
    best = f"{name}_{metrics[0]}"
    mix = {"mix": {"kind": "vqa", "train": "t.jsonl", "eval": "e.jsonl"}}  # what a job trains on
    raw = {"name": "t", "model": {"path": "m"}, "datasets": datasets | mix,
           "training": {"max_steps": 1}, "best": {"metric": best}}  # fmt: skip
    spec = validate_spec(raw)
    assert set(spec.datasets) == {*datasets, "mix"} and set(spec.trained) == {"mix"}


@pytest.mark.skipif(
    "mcq" not in known_kinds(),
    reason='jobs/bench_suite.toml uses kind = "mcq", which is not registered yet',
)
def test_the_bench_suite_job_is_a_valid_spec() -> None:
    from orchestrator.contract.spec import load_spec

    spec = load_spec(ROOT / "jobs" / "bench_suite.toml")
    assert set(spec.datasets) == {*BENCHMARKS, "mmmu_open"}
    for name, (kind, metrics, _, _) in BENCHMARKS.items():
        assert spec.datasets[name].kind == kind
        assert spec.declared_metrics(name) == tuple(metrics)

"""The offline demo datasets: deterministic, complete, and with disjoint texture splits."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from workers.data.demo import DEMO_DATASETS, build_demo, texture_crop_boxes


def manifest(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.open()]


def test_datasets_are_complete_and_valid(demo_data: Path) -> None:
    expected = {"digits": 10, "textures": 10, "faces": 2}
    for name in DEMO_DATASETS:
        labels = json.loads((demo_data / name / "labels.json").read_text())
        assert len(labels) == expected[name]
        ids: set[str] = set()
        for split in ("train", "test"):
            rows = manifest(demo_data / name / f"{split}.jsonl")
            assert {r["label"] for r in rows} == set(
                range(expected[name])
            )  # every class, both splits
            assert {r["dataset_name"] for r in rows} == {name}
            ids |= {str(r["id"]) for r in rows}
            for r in rows[:: max(1, len(rows) // 20)]:
                with Image.open(str(r["image_path"])) as im:
                    im.load()
        n_rows = sum(len(manifest(demo_data / name / f"{s}.jsonl")) for s in ("train", "test"))
        assert len(ids) == n_rows  # ids unique across splits
    assert (
        len(manifest(demo_data / "digits" / "train.jsonl"))
        + len(manifest(demo_data / "digits" / "test.jsonl"))
        == 1797
    )


def test_build_is_deterministic(tmp_path: Path, demo_data: Path) -> None:
    again = build_demo(tmp_path / "again")
    for ds in again:
        for split in ("train", "test"):
            a = manifest(demo_data / ds.name / f"{split}.jsonl")
            b = manifest(tmp_path / "again" / ds.name / f"{split}.jsonl")
            assert [(r["id"], r["label"]) for r in a] == [(r["id"], r["label"]) for r in b]
            for ra, rb in list(zip(a, b, strict=True))[::50]:
                assert (
                    Path(str(ra["image_path"])).read_bytes()
                    == Path(str(rb["image_path"])).read_bytes()
                )


def test_texture_train_and_test_crops_never_overlap() -> None:
    boxes = texture_crop_boxes()
    for label in range(10):
        train = [b for lab, b in boxes["train"] if lab == label]
        test = [b for lab, b in boxes["test"] if lab == label]
        assert train and test
        assert not any(a.intersects(b) for a in train for b in test)


def test_rebuild_is_a_no_op_unless_forced(tmp_path: Path) -> None:
    build_demo(tmp_path)
    marker = tmp_path / "faces" / "COMPLETE"
    first = marker.stat().st_mtime_ns
    build_demo(tmp_path)
    assert marker.stat().st_mtime_ns == first
    build_demo(tmp_path, force=True)
    assert marker.stat().st_mtime_ns != first


def test_easy_vqa_is_the_packages_real_benchmark(demo_data: Path) -> None:
    from workers.data.demo_bench import TEST_PER_TYPE, easy_vqa_root

    src = json.loads((easy_vqa_root() / "test" / "questions.json").read_text())
    everything = manifest(demo_data / "easyvqa" / "test_all.jsonl")
    assert len(everything) == len(src) == 9673
    # The package's questions and answers, verbatim, with the question type as the category.
    for row in everything[::97]:
        text, answer, image_id = src[int(row["id"].split("/")[-1])]
        assert row["texts"] == [{"user": text, "assistant": answer}]
        assert row["images"] == [f"easyvqa/images/test/{image_id}.png"]
        assert row["references"] == [answer] * 10  # all ten VQA annotators agree
        asked = "color" if "color" in text else "shape"  # what is the blue shape? -> circle
        assert row["category"] == ("yes/no" if answer in ("yes", "no") else asked), text
    # The eval sample: as many of each type; train balanced by type, from the whole split.
    test = manifest(demo_data / "easyvqa" / "test.jsonl")
    types = [r["category"] for r in test]
    assert {t: types.count(t) for t in set(types)} == dict.fromkeys(
        ("yes/no", "shape", "color"), TEST_PER_TYPE
    )
    assert {r["id"] for r in test} <= {r["id"] for r in everything}
    train = manifest(demo_data / "easyvqa" / "train.jsonl")
    train_all = manifest(demo_data / "easyvqa" / "train_all.jsonl")
    assert len(train_all) == 38575 and {r["id"] for r in train} < {r["id"] for r in train_all}
    counts = {t: sum(r["category"] == t for r in train) for t in ("yes/no", "shape", "color")}
    assert counts["yes/no"] == (counts["shape"] + counts["color"]) // 2
    assert counts["shape"] == sum(r["category"] == "shape" for r in train_all)
    # Train and test images are the package's own 4,000 and 1,000, never shared.
    train_images = {p for r in train_all for p in r["images"]}
    test_images = {p for r in everything for p in r["images"]}
    assert (len(train_images), len(test_images)) == (4000, 1000)
    assert not train_images & test_images
    with Image.open(demo_data / train[0]["images"][0]) as im:
        assert im.size == (64, 64)


def test_mcq_twins_ask_for_the_true_class(demo_data: Path) -> None:
    for name, n_options in (("digits", 10), ("textures", 10), ("faces", 2)):
        for split in ("train", "test"):
            rows = manifest(demo_data / f"mcq_{name}" / f"{split}.jsonl")
            source = manifest(demo_data / name / f"{split}.jsonl")
            assert len(rows) == len(source)
            for row, src in zip(rows, source, strict=True):
                assert len(row["options"]) == n_options == len(set(row["options"]))
                picked = row["options"]["ABCDEFGHIJ".index(row["answer"])]
                assert picked == row["category"]  # the letter names the true class
                assert row["answer"] == "ABCDEFGHIJ"[src["label"]]
                assert Path(demo_data / row["images"][0]) == Path(src["image_path"])

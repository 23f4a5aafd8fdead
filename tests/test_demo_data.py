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

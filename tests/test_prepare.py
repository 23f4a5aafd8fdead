"""`orch data prepare` on small fixtures of each layout: files written, rows, label maps, errors
with their file and line, and manifests that orch's own readers accept."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.cli import main
from workers.data.manifest import read_manifest
from workers.data.vqa import read_vqa_manifest


def png(path: Path, shade: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path)
    return path


def prepare(*args: str) -> int:
    return main(["data", "prepare", *args])


def test_class_folders_split_stratified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in ("cat", "dog"):
        for i in range(10):
            png(tmp_path / "src" / c / f"{i}.png")
    out = tmp_path / "out"
    assert prepare("folders", str(tmp_path / "src"), "--out", str(out), "--name", "pets") == 0
    assert json.loads((out / "labels.json").read_text()) == ["cat", "dog"]
    train = read_manifest(out / "train.jsonl", "pets", 2)
    evals = read_manifest(out / "eval.jsonl", "pets", 2)
    assert len(train) == 16 and len(evals) == 4
    assert sorted(s.label for s in evals) == [0, 0, 1, 1]
    assert not {s.image_path for s in train} & {s.image_path for s in evals}
    assert "num_classes = 2" in capsys.readouterr().out  # the TOML snippet


def test_food101_layout_and_a_bad_line(tmp_path: Path) -> None:
    src = tmp_path / "food-101"
    (src / "meta").mkdir(parents=True)
    (src / "meta" / "classes.txt").write_text("apple_pie\nramen\n")
    for c, ids in (("apple_pie", ["1", "2", "3"]), ("ramen", ["4", "5", "6"])):
        for i in ids:
            png(src / "images" / c / f"{i}.jpg")
    (src / "meta" / "train.txt").write_text("apple_pie/1\napple_pie/2\nramen/4\nramen/5\n")
    (src / "meta" / "test.txt").write_text("apple_pie/3\nramen/6\n")
    out = tmp_path / "out"
    args = ["food101", str(src), "--out", str(out), "--name", "food", "--output-format", "parquet"]
    assert prepare(*args) == 0
    train = read_manifest(out / "train.parquet", "food", 2)
    assert [s.label for s in train] == [0, 0, 1, 1]
    assert len(read_manifest(out / "eval.parquet", "food", 2)) == 2
    (src / "meta" / "test.txt").write_text("apple_pie/3\nsushi/7\n")
    assert prepare(*args) == 2  # the error is logged with meta/test.txt:2


def test_hf_save_to_disk_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def image_bytes(shade: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (shade, 0, 0)).save(buf, format="PNG")
        return buf.getvalue()

    table = pa.table(
        {
            "image": [{"bytes": image_bytes(s), "path": f"{s}.png"} for s in range(6)],
            "label": [0, 1, 2, 0, 1, 2],
        }
    )
    disk = tmp_path / "saved"  # what datasets' save_to_disk writes for one split
    disk.mkdir()
    with (
        pa.OSFile(str(disk / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    info = {"features": {"label": {"_type": "ClassLabel", "names": ["a", "b", "c"]}}}
    (disk / "dataset_info.json").write_text(json.dumps(info))
    out = tmp_path / "out"
    assert prepare("hf", str(disk), "--out", str(out), "--name", "hfset", "--max-samples", "4") == 0
    assert json.loads((out / "labels.json").read_text()) == ["a", "b", "c"]
    rows = read_manifest(out / "train.jsonl", "hfset", 3)
    assert [s.label for s in rows] == [0, 1, 2, 0]
    with Image.open(rows[1].image_path) as im:
        assert im.getpixel((0, 0)) == (1, 0, 0)

    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    pq.write_table(table, pq_dir / "train-00000.parquet")
    pq.write_table(table.slice(0, 2), pq_dir / "test-00000.parquet")
    out2 = tmp_path / "out2"
    assert prepare("hf", str(pq_dir), "--out", str(out2), "--name", "pq") == 0
    assert len(read_manifest(out2 / "eval.jsonl", "pq", 3)) == 2
    assert (
        prepare("hf", str(pq_dir), "--out", str(out2), "--name", "pq", "--label-column", "y") == 2
    )


def test_vqa_jsonl_resolves_image_roots_in_order(tmp_path: Path) -> None:
    png(tmp_path / "root_b" / "pics" / "1.png")
    png(tmp_path / "root_a" / "pics" / "2.png")
    src = tmp_path / "vqa.jsonl"
    turns = [{"user": "what is it ?", "assistant": "red", "relevance": 4}]
    src.write_text(
        json.dumps({"id": "a", "images": ["pics/1.png"], "texts": turns})
        + "\n"
        + json.dumps({"id": "b", "images": ["pics/2.png"], "texts": turns})
        + "\n"
    )
    out = tmp_path / "out"
    roots = ["--image-root", str(tmp_path / "root_a"), "--image-root", str(tmp_path / "root_b")]
    assert prepare("vqa-jsonl", str(src), "--out", str(out), "--name", "redq", *roots) == 0
    samples, _ = read_vqa_manifest(out / "train.jsonl", "redq")
    assert [s.images[0] for s in samples] == [
        (tmp_path / "root_b" / "pics" / "1.png").resolve(),
        (tmp_path / "root_a" / "pics" / "2.png").resolve(),
    ]
    assert samples[0].turns[0].ratings == {"relevance": 4}
    src.write_text(
        src.read_text() + json.dumps({"id": "c", "images": ["pics/9.png"], "texts": turns}) + "\n"
    )
    assert prepare("vqa-jsonl", str(src), "--out", str(out), "--name", "redq", *roots) == 2

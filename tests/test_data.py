"""Manifests are checked line by line; the mixture sampler resumes exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.contract.errors import DataError
from workers.data.manifest import read_manifest
from workers.data.mixture import MixturePosition, MixtureSampler, rank_slice


def write_manifest(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(i: int, label: int = 0, ds: str = "a") -> dict[str, object]:
    return {"id": f"{ds}{i}", "image_path": f"img/{i}.png", "label": label, "dataset_name": ds}


def test_manifest_reads_and_resolves_relative_paths(tmp_path: Path) -> None:
    m = write_manifest(tmp_path / "m.jsonl", [row(0, 1), row(1, 2)])
    samples = read_manifest(m, "a", 3)
    assert [s.label for s in samples] == [1, 2]
    assert samples[0].image_path == tmp_path / "img" / "0.png"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "malformed JSON"),
        ({"image_path": "x.png", "label": 1}, "missing field(s) dataset_name"),
        (row(5, label=3), "label 3 outside [0, 3) of dataset a"),
        (row(5, label=-1), "label -1 outside [0, 3)"),
        ({**row(5), "label": "1"}, "label must be an integer, got '1'"),
        (row(5, ds="b"), "dataset_name 'b' but the manifest is configured as datasets.a"),
        (row(0), "duplicate id 'a0' (first on line 1)"),
    ],
)
def test_each_bad_row_is_reported_with_file_and_line(
    tmp_path: Path, bad: object, message: str
) -> None:
    m = write_manifest(tmp_path / "m.jsonl", [row(0), row(1), bad])
    with pytest.raises(DataError) as e:
        read_manifest(m, "a", 3)
    assert f"{m}:3: {message}" in str(e.value)


def test_all_problems_are_listed_not_just_the_first(tmp_path: Path) -> None:
    m = write_manifest(tmp_path / "m.jsonl", [row(0, 9), row(1), "[]", row(2, 7)])
    with pytest.raises(DataError, match=r"3 problem\(s\)") as e:
        read_manifest(m, "a", 3)
    assert ":1:" in str(e.value) and ":3:" in str(e.value) and ":4:" in str(e.value)


def test_missing_manifest_names_the_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest not found \(datasets\.a\)"):
        read_manifest(tmp_path / "nope.jsonl", "a", 3)


def sampler(pos: MixturePosition | None = None) -> MixtureSampler:
    return MixtureSampler({"a": 50, "b": 7}, {"a": 1.0, "b": 1.0}, seed=3, position=pos)


def test_no_sample_repeats_within_an_epoch() -> None:
    s = sampler()
    drawn = [p for step in range(1, 6) for p in s.global_batch(step, 0, 8)]
    b = [i for d, i in drawn if d == "b"]
    for epoch_start in range(0, len(b) - 7, 7):
        assert sorted(b[epoch_start : epoch_start + 7]) == list(range(7))
    assert Counter(d for d, _ in drawn)["a"] > 10  # both datasets are mixed in


def test_resume_from_a_saved_position_continues_exactly() -> None:
    full = sampler()
    plan = [full.global_batch(step, 0, 8) for step in range(1, 11)]
    first = sampler()
    for step in range(1, 5):
        first.global_batch(step, 0, 8)
    saved = json.loads(json.dumps(first.pos.to_json()))  # through a checkpoint file
    resumed = sampler(MixturePosition.from_json(saved))
    assert [resumed.global_batch(step, 0, 8) for step in range(5, 11)] == plan[4:]


def test_ranks_take_disjoint_slices_that_cover_the_batch() -> None:
    batch = sampler().global_batch(1, 0, 8)
    slices = [rank_slice(batch, r, 2) for r in range(2)]
    assert sorted(slices[0] + slices[1]) == sorted(batch)
    assert len(slices[0]) == len(slices[1]) == 4

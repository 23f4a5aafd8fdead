"""The memory-mapped row index (workers/data/index.py) and the constant-memory permutation of
large datasets (workers/data/mixture.py): the rows are the manifest's, an index is built once
and rebuilt when its manifest changes, a bad manifest leaves no index, concurrent builders build
once, and a resumed sampler on a large dataset continues the uninterrupted one."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.contract.errors import DataError
from orchestrator.contract.kinds import get_kind
from orchestrator.contract.spec import DatasetSpec
from tests.helpers.paths import ROOT, repo_env
from workers.data.index import META, ensure_index
from workers.data.mixture import FeistelPermutation, MixturePosition, MixtureSampler


def faces(demo_data: Path, train: Path | None = None) -> DatasetSpec:
    return get_kind("classification").spec.model_validate(
        {
            "train": str(train or demo_data / "faces" / "train.jsonl"),
            "eval": str(demo_data / "faces" / "test.jsonl"),
            "num_classes": 2,
        }
    )


def vqa(demo_data: Path) -> DatasetSpec:
    return get_kind("vqa").spec.model_validate(
        {
            "kind": "vqa",
            "train": str(demo_data / "vqa_digits" / "train.jsonl"),
            "eval": str(demo_data / "vqa_digits" / "test.jsonl"),
            "image_roots": [str(demo_data)],
            "min_ratings": {"relevance": 3},
        }
    )


@pytest.mark.parametrize(("make", "name"), [(faces, "faces"), (vqa, "vqa_digits")])
def test_index_holds_the_rows_the_kind_reads(
    demo_data: Path, tmp_path: Path, make: object, name: str
) -> None:
    ds = make(demo_data)  # type: ignore[operator]
    kind = get_kind(ds.kind)
    rows = kind.read(name, ds, "train", [name])
    index = ensure_index(name, ds, "train", [name], tmp_path)
    assert len(index) == len(rows) and list(index) == rows
    assert index[-1] == rows[-1] and index[2:5] == rows[2:5]
    with pytest.raises(IndexError):
        index[len(rows)]
    again = pickle.loads(pickle.dumps(index))  # what a loader worker or a Ray task gets
    assert again[3] == rows[3] and len(pickle.dumps(index)) < 1000
    assert index.meta["rows"] == len(rows)


def test_index_is_reused_and_rebuilt_when_the_manifest_changes(
    demo_data: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "train.jsonl"
    lines = (demo_data / "faces" / "train.jsonl").read_text().splitlines()
    manifest.write_text("\n".join(lines[:10]) + "\n")
    first = ensure_index("faces", faces(demo_data, manifest), "train", ["faces"], tmp_path / "ix")
    built = (first.path / META).stat().st_mtime_ns
    same = ensure_index("faces", faces(demo_data, manifest), "train", ["faces"], tmp_path / "ix")
    assert same.path == first.path and (same.path / META).stat().st_mtime_ns == built
    manifest.write_text("\n".join(lines[:12]) + "\n")
    changed = ensure_index("faces", faces(demo_data, manifest), "train", ["faces"], tmp_path / "ix")
    assert changed.path != first.path and len(changed) == 12


def test_a_bad_manifest_leaves_no_index(demo_data: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    rows = [json.loads(x) for x in (demo_data / "faces" / "train.jsonl").open()][:6]
    rows[4]["id"] = rows[1]["id"] = "twice"
    rows[2]["label"] = 9
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        ensure_index("faces", faces(demo_data, manifest), "train", ["faces"], tmp_path / "ix")
    assert f"{manifest}:3: label 9 outside [0, 2)" in str(e.value)
    del rows[2]["label"]
    rows[2]["label"] = 1
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        ensure_index("faces", faces(demo_data, manifest), "train", ["faces"], tmp_path / "ix")
    assert f"{manifest}:5: duplicate id 'twice' (first on line 2)" in str(e.value)
    left = [p.name for p in (tmp_path / "ix").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no index, no half-built folder


BUILD = """
import sys, time
from pathlib import Path
from orchestrator.contract.kinds import get_kind
from workers.data.index import ensure_index
ds = get_kind("classification").spec.model_validate(
    {"train": sys.argv[1], "eval": sys.argv[1], "num_classes": 2})
index = ensure_index("faces", ds, "train", ["faces"], Path(sys.argv[2]))
print(index.path, len(index), index.meta["build_s"])
"""


def test_concurrent_builders_build_once(demo_data: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    line = (demo_data / "faces" / "train.jsonl").read_text().splitlines()[0]
    row = json.loads(line)
    manifest.write_text("".join(json.dumps(row | {"id": f"r{i}"}) + "\n" for i in range(30_000)))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(manifest), str(tmp_path / "ix")],
            cwd=ROOT,
            env=repo_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({o[0] for o in outs}) == 1 and {o[1] for o in outs} == {"30000"}
    assert len({o[2] for o in outs}) == 1  # one build: every process read its meta.json
    assert [p.name for p in (tmp_path / "ix").iterdir() if p.is_dir()] == [Path(outs[0][0]).name]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 4097])
def test_feistel_permutation_is_a_permutation(n: int) -> None:
    perm = FeistelPermutation(n, [0, 1, 2])
    assert sorted(perm[i] for i in range(n)) == list(range(n))
    assert [perm[i] for i in range(n)] == [FeistelPermutation(n, [0, 1, 2])[i] for i in range(n)]
    if n > 7:  # another key, another order
        assert [perm[i] for i in range(n)] != [
            FeistelPermutation(n, [0, 1, 3])[i] for i in range(n)
        ]


def test_a_large_dataset_is_sampled_in_constant_memory_and_resumes_exactly() -> None:
    """Ten million rows beside a small dataset: the large one is walked by a FeistelPermutation
    (no array of its size), and a sampler restored from a saved position draws exactly what the
    uninterrupted one draws."""
    sizes, weights = {"big": 10_000_000, "small": 50}, {"big": 1.0, "small": 1.0}
    whole = MixtureSampler(sizes, weights, seed=3)
    first = [whole.global_batch(s, 0, 32) for s in range(1, 21)]
    assert isinstance(whole._perm("big", 0), FeistelPermutation)
    saved = MixturePosition.from_json(json.loads(json.dumps(whole.pos.to_json())))
    rest = [whole.global_batch(s, 0, 32) for s in range(21, 41)]
    resumed = MixtureSampler(sizes, weights, seed=3, position=saved)
    assert [resumed.global_batch(s, 0, 32) for s in range(21, 41)] == rest
    big = [i for batch in first + rest for d, i in batch if d == "big"]
    assert len(set(big)) == len(big)  # no sample twice within an epoch
    small = [i for batch in first + rest for d, i in batch if d == "small"]
    assert sorted(small[:50]) == list(range(50))  # the small one: each sample once per epoch


def test_an_index_survives_a_killed_builder(demo_data: Path, tmp_path: Path) -> None:
    """A builder killed mid-build leaves a .tmp folder, never an index; the next one builds."""
    manifest = tmp_path / "train.jsonl"
    row = json.loads((demo_data / "faces" / "train.jsonl").read_text().splitlines()[0])
    manifest.write_text("".join(json.dumps(row | {"id": f"r{i}"}) + "\n" for i in range(400_000)))
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(manifest), str(tmp_path / "ix")],
        cwd=ROOT,
        env=repo_env(),
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not any((tmp_path / "ix").glob("*.tmp*/rows.bin")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not any((tmp_path / "ix").glob(f"*/{META}"))
    ds = faces(demo_data, manifest)
    index = ensure_index("faces", ds, "train", ["faces"], tmp_path / "ix")
    assert len(index) == 400_000 and index[123_456].id == "r123456"
    assert os.path.isfile(index.path / META)
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [
        index.path.name,
        f"{index.path.name}.lock",
    ]  # the dead builder's folder is gone

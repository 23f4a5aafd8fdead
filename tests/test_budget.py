"""Every VQA row is counted as training will encode it, before any compute: the count equals
VQAEncoder.encode's on real images of every shape the resizing treats differently, and a row too
long for a pack stops `orch validate` (and the pre-flight of `orch submit`) with its file, line
and id."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
from PIL import Image

from orchestrator.cli import main
from tests.helpers.jobs import vqa_job
from workers.data.budget import sample_budget
from workers.data.vqa import ImageConfig, Turn, VQAEncoder, VQASample


def images(tmp_path: Path) -> list[Path]:
    """A JPEG big enough for draft scaling, a PNG big enough for the box reduction, a small
    portrait PNG that is upscaled, and a wide one."""
    out = []
    for name, size in (("big.jpg", (1600, 1200)), ("big.png", (1400, 900)),
                       ("small.png", (20, 37)), ("wide.png", (300, 60))):  # fmt: skip
        path = tmp_path / name
        Image.new("RGB", size, (120, 40, 200)).save(path)
        out.append(path)
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        ImageConfig(max_side=448),
        ImageConfig(max_side=224, min_side=56),
        ImageConfig(max_side=448, tile_size=112, max_tiles=4),
    ],
    ids=["plain", "upscaled", "tiles"],
)
def test_the_count_equals_the_training_encoding(
    tmp_path: Path, tiny_model: Path, cfg: ImageConfig
) -> None:
    encoder = VQAEncoder(tiny_model)
    paths = images(tmp_path)
    samples = [
        VQASample(f"s{i}", "d", (p,), (Turn("what is this ?", "a shape " * (i + 1), {}),), i + 1)
        for i, p in enumerate(paths)
    ]
    samples.append(VQASample("two", "d", tuple(paths[:2]), (Turn("compare", "same", {}),), 9))
    for s in samples:
        encoded = encoder.encode(s, cfg)
        assert sample_budget(encoder, s, cfg) == (encoded.n_tokens, encoded.n_images), s.id


def test_a_row_too_long_for_a_pack_is_rejected_with_file_line_and_id(
    tmp_path: Path, demo_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = vqa_job(tmp_path, demo_data, tiny_model)
    raw = tomllib.loads(job.read_text())
    train = Path(raw["datasets"]["vqa_digits"]["train"])
    rows = [json.loads(x) for x in train.read_text().splitlines()[:20]]
    rows[12]["texts"][-1]["assistant"] = "seven " * 20_000  # line 13
    manifest = tmp_path / "vqa_digits_train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw["datasets"]["vqa_digits"]["train"] = str(manifest)
    raw["training"]["pack_max_tokens"] = 256
    job.write_text(tomli_w.dumps(raw))
    code = main(["validate", str(job)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0, text
    assert f"{manifest}:13: sample '{rows[12]['id']}' has " in text, text
    assert "a pack holds at most 256 tokens" in text
    assert text.count("a pack holds at most") == 1  # the other rows fit

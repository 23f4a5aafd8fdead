"""VQA samples: reading and quality filters, images, chat-template label masks, mRoPE ids, and
packing that does not change the math (packed losses equal unpacked ones, per sample)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from orchestrator.contract.errors import DataError
from workers.data.vqa import (
    IGNORE,
    ImageConfig,
    VQAEncoder,
    VQASample,
    before_last_answer,
    best_fit_rows,
    dynamic_resize,
    mrope_positions,
    pack,
    per_sample_loss,
    read_vqa_manifest,
    split_tiles,
)
from workers.models.classifier import build_classifier


def vqa_samples(demo_data: Path, name: str = "digits") -> list[VQASample]:
    samples, _ = read_vqa_manifest(
        demo_data / f"vqa_{name}" / "train.jsonl", f"vqa_{name}", [demo_data], {"relevance": 3}
    )
    return samples


def test_quality_filter_drops_low_rated_turns_and_counts_them(demo_data: Path) -> None:
    path = demo_data / "vqa_faces" / "train.jsonl"
    rows = len(path.read_text().splitlines())
    kept, counts = read_vqa_manifest(path, "vqa_faces", [demo_data], {"relevance": 3})
    assert len(kept) == rows and counts.turns_dropped == rows and counts.samples_dropped == 0
    assert all(len(s.turns) == 1 and s.turns[0].assistant in {"yes", "no"} for s in kept)
    unfiltered, counts = read_vqa_manifest(path, "vqa_faces", [demo_data])
    assert all(len(s.turns) == 2 for s in unfiltered) and counts.turns_dropped == 0


def test_relative_images_resolve_through_roots_and_a_missing_one_names_the_line(
    tmp_path: Path, demo_data: Path
) -> None:
    good = {
        "id": "a",
        "dataset_name": "q",
        "images": ["digits/images/train/00000.png"],
        "texts": [{"user": "what digit is this ?", "assistant": "zero"}],
    }
    bad = good | {"id": "b", "images": ["digits/images/train/nope.png"]}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as e:
        read_vqa_manifest(manifest, "q", [demo_data])
    assert f"{manifest}:2: image 'digits/images/train/nope.png' not found" in str(e.value)
    assert str(demo_data) in str(e.value)  # the roots tried are listed
    manifest.write_text(json.dumps(good) + "\n")
    (sample,), _ = read_vqa_manifest(manifest, "q", [demo_data])
    assert sample.images == ((demo_data / "digits/images/train/00000.png").resolve(),)


def test_dynamic_resize_keeps_aspect_caps_the_long_side_and_aligns_to_patches() -> None:
    wide = Image.new("RGB", (1000, 500))
    out = dynamic_resize(wide, max_side=448, multiple=28)
    assert out.size == (448, 224)
    small = Image.new("RGB", (30, 10))
    out = dynamic_resize(small, max_side=448, multiple=28, min_side=56)
    assert out.size[0] % 28 == 0 and out.size[1] % 28 == 0 and out.size[1] >= 56
    assert out.size[0] / out.size[1] == pytest.approx(3, rel=0.05)
    tiles = split_tiles(Image.new("RGB", (224, 112)), tile=56, max_tiles=4)
    assert len(tiles) == 1 + 4 and all(
        t.size == (56, 56) for t in tiles
    )  # global + 2x2 (4x2 capped)


def test_labels_cover_exactly_the_assistant_answers(demo_data: Path, tiny_model: Path) -> None:
    enc = VQAEncoder(tiny_model)
    sample = vqa_samples(demo_data, "textures")[0]
    e = enc.encode(sample, ImageConfig(max_side=56, min_side=56))
    answer = [t for t in e.labels.tolist() if t != IGNORE]
    assert enc.tokenizer.decode(answer).split() == [sample.turns[-1].assistant, "<|im_end|>"]
    # Everything else, including the question and the image tokens, is masked.
    assert (e.labels[e.input_ids == enc.image_token_id] == IGNORE).all()
    assert int((e.input_ids == enc.image_token_id).sum()) == 4  # 56x56 -> 2x2 merged tokens
    prompt = enc.encode_prompt(sample, ImageConfig(max_side=56, min_side=56))
    assert prompt.target == sample.turns[-1].assistant
    assert torch.equal(prompt.input_ids, e.input_ids[: prompt.n_tokens])


def test_the_prompt_cut_from_an_encoding_is_the_encoded_prompt(
    demo_data: Path, tiny_model: Path
) -> None:
    """Evaluation encodes a sample once and cuts the generation prompt out of it: the same
    tokens and pixels as encoding the prompt on its own, for one turn and for two (both
    answers supervised: the cut is before the last)."""
    enc, cfg = VQAEncoder(tiny_model), ImageConfig(max_side=56, min_side=56)
    two_turns, _ = read_vqa_manifest(
        demo_data / "vqa_digits" / "test.jsonl", "vqa_digits", [demo_data]
    )
    one_turn, _ = read_vqa_manifest(demo_data / "easyvqa" / "test.jsonl", "easyvqa", [demo_data])
    assert len(two_turns[0].turns) == 2 and len(one_turn[0].turns) == 1
    for sample in [*two_turns[:5], *one_turn[:5]]:
        cut = before_last_answer(enc.encode(sample, cfg), sample.turns[-1].assistant)
        alone = enc.encode_prompt(sample, cfg)
        assert torch.equal(cut.input_ids, alone.input_ids), sample.id
        assert torch.equal(cut.pixel_values, alone.pixel_values)
        assert cut.target == alone.target and (cut.labels == IGNORE).all()


def test_mrope_positions_equal_transformers_get_rope_index(
    demo_data: Path, tiny_model: Path
) -> None:
    enc = VQAEncoder(tiny_model)
    model = build_classifier(tiny_model, 2, "mean", "sdpa")
    two_images = VQASample(
        "two", "vqa_digits", vqa_samples(demo_data)[0].images * 2, vqa_samples(demo_data)[0].turns
    )
    for cfg in (ImageConfig(56, 56), ImageConfig(112, 56, tile_size=56, max_tiles=4)):
        e = enc.encode(two_images, cfg)
        ids = e.input_ids[None]
        ref, _ = model.backbone.get_rope_index(  # type: ignore[operator]
            ids,
            image_grid_thw=e.image_grid_thw,
            mm_token_type_ids=(ids == enc.image_token_id).int(),
        )
        ours = mrope_positions(e.input_ids, e.image_grid_thw, enc.image_token_id, enc.merge)
        assert torch.equal(ref[:, 0], ours)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_the_same_per_sample_losses_as_unpacked(
    demo_data: Path, tiny_model: Path, attn: str
) -> None:
    """Five real samples (one with two images split into tiles) packed into rows of 96 tokens:
    each sample's loss equals the loss of the same sample run alone through transformers' own
    (unpacked) path, where the model computes positions and masks itself."""
    torch.manual_seed(0)
    enc = VQAEncoder(tiny_model)
    model = build_classifier(tiny_model, 2, "mean", attn).eval()
    digits, textures = vqa_samples(demo_data), vqa_samples(demo_data, "textures")
    samples = [digits[0], textures[1], digits[2], textures[3]]
    multi = VQASample("multi", "vqa_digits", digits[5].images + textures[5].images, digits[5].turns)
    encoded = [enc.encode(s, ImageConfig(56, 56)) for s in samples]
    encoded.append(enc.encode(multi, ImageConfig(112, 56, tile_size=56, max_tiles=2)))
    rows = best_fit_rows([e.n_tokens for e in encoded], [e.n_images for e in encoded], 96, 18)
    assert len(rows) < len(encoded)  # really packed
    batch = pack(encoded, rows, enc.image_token_id, enc.merge, enc.pad_id)
    with torch.no_grad():
        logits = model(
            **batch.model_inputs(torch.device("cpu"), torch.float32, attn), targets=batch.targets
        )
        packed, _ = per_sample_loss(logits, batch.targets, batch.segments, batch.n_samples)
        alone = []
        for e in encoded:
            ids = e.input_ids[None]
            out = model.backbone(
                input_ids=ids,
                pixel_values=e.pixel_values,
                image_grid_thw=e.image_grid_thw,
                mm_token_type_ids=(ids == enc.image_token_id).int(),
                use_cache=False,
            )
            hidden = out.last_hidden_state[0, :-1]
            target = e.labels[1:]
            keep = target != IGNORE
            lm = model.vlm.lm_head(hidden[keep])  # type: ignore[operator]
            alone.append(torch.nn.functional.cross_entropy(lm, target[keep]))
    torch.testing.assert_close(packed, torch.stack(alone), rtol=1e-5, atol=1e-5)


def test_a_sample_longer_than_a_pack_is_an_error_not_a_truncation() -> None:
    with pytest.raises(ValueError, match="sample 1 has 300 tokens"):
        best_fit_rows([10, 300], [1, 1], 256, 18)
    with pytest.raises(ValueError, match="3 images"):
        best_fit_rows([10], [3], 256, 2)
    rows = best_fit_rows([100, 100, 60, 50], [1, 1, 1, 1], 160, 18)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3]
    assert all(sum([100, 100, 60, 50][i] for i in r) <= 160 for r in rows)


def test_benchmark_rows_keep_every_reference_and_draw_groups_whole(tmp_path: Path) -> None:
    """A benchmark row carries all its gold answers, its category and its group; a partial
    eval never splits a group (MME scores an image's two questions together)."""
    from workers.data.vqa import parse_vqa_row
    from workers.kinds.vqa import KIND

    image = tmp_path / "a.png"
    image.write_bytes(b"")  # existence is all parse_vqa_row checks
    rows = []
    for i in range(40):
        row = {
            "id": f"mme/{i}", "dataset_name": "mme", "images": ["a.png"],
            "texts": [{"user": "is it red ?", "assistant": "Yes" if i % 2 else "No"}],
            "references": ["Yes" if i % 2 else "No"] * 2, "category": "color",
            "group": f"img{i // 2}",
        }  # fmt: skip
        sample, problems = parse_vqa_row(row, f"m.jsonl:{i + 1}", "mme", tmp_path / "m.jsonl", [])
        assert not problems and sample is not None
        rows.append(sample)
    assert rows[1].gold == ["Yes", "Yes"] and rows[1].category == "color"
    subset = KIND.eval_subset(rows, 0.5, seed=0)
    groups: dict[str | None, int] = {}
    for s in subset:
        groups[s.group] = groups.get(s.group, 0) + 1
    assert set(groups.values()) == {2} and 8 <= len(groups) <= 12
    bad, problems = parse_vqa_row(
        {**row, "references": []}, "m.jsonl:41", "mme", tmp_path / "m.jsonl", []
    )
    assert bad is None and problems == [
        "m.jsonl:41: references must be a non-empty list of strings"
    ]

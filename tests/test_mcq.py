"""The mcq kind: lmms-eval's prompts, row checks, training on the answer letter only, and both
scorings (generated answers read as lmms-eval reads them; option log-likelihoods)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from orchestrator.contract.errors import DataError, SpecError
from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.spec import JobSpec, validate_spec
from workers.data.mcq import (
    IGNORE,
    MCQRow,
    build_prompt,
    option_encodings,
    prompt_of,
    read_mcq_manifest,
    to_vqa_sample,
)
from workers.data.vqa import ImageConfig, VQAEncoder
from workers.kinds.mcq import KIND, MCQSpec
from workers.models.classifier import VLMClassifier, build_classifier

CPU = torch.device("cpu")
POST = "Answer with the option's letter from the given choices directly."


def row(**kw: Any) -> dict[str, Any]:
    base = {"id": "q0", "dataset_name": "quiz", "images": [], "question": "what is in the image ?",
            "hint": None, "options": ["cat", "dog"], "answer": "A", "category": None,
            "group": None}  # fmt: skip
    return base | kw


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mcq_row(**kw: Any) -> MCQRow:
    base = dict(id="q0", dataset="quiz", images=(), question="q", hint=None,
                options=("cat", "dog"), answer="A")  # fmt: skip
    return MCQRow(**(base | kw))


@pytest.fixture(scope="module")
def letters_model(tiny_model: Path) -> Path:
    """The session's tiny Qwen2.5-VL, whose vocabulary has the option letters (each its own
    token, "A." read as "A" "."), so that options can be told apart."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tok.unk_token_id not in tok("A. cat B. yes C. no D. one")["input_ids"]
    return tiny_model


@pytest.fixture(scope="module")
def no_letters_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2.5-VL whose vocabulary reads every option letter as [UNK] (what orch doctor
    must catch). The vocabulary is patched only while this model is built."""
    import workers.models.tiny as tiny

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny, "WORDS", [w for w in tiny.WORDS if w not in set("ABCDEFGHIJ")])
        return tiny.build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("no_letters") / "tiny")


@pytest.fixture(scope="module")
def model(letters_model: Path) -> VLMClassifier:
    torch.manual_seed(0)
    return build_classifier(letters_model, 2, "mean", "sdpa").eval()


@pytest.fixture(scope="module")
def quiz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six rows: two without an image first, then one, two and three images (markers in the
    question and the options), 2 to 5 options, three categories."""
    folder = tmp_path_factory.mktemp("quiz")
    for i, (size, color) in enumerate(
        [((56, 56), "red"), ((84, 56), "green"), ((56, 112), "blue")]
    ):
        Image.new("RGB", size, color).save(folder / f"img{i}.png")
    rows = [
        row(id="t0", question="which is a number ?", options=["one", "cat", "dog"], answer="A",
            category="numbers"),
        row(id="t1", question="which is an animal ?", hint="this is a hint", answer="B",
            options=["two", "cat"], category="animals"),
        row(id="i0", images=["img0.png"], options=["red", "green", "blue", "black"], answer="A",
            category="colors", hint="nan"),
        row(id="i1", images=["img1.png", "img2.png"], question="what is <image 1> ?",
            options=["<image 2>", "cat", "dog", "one", "two"], answer="A", category="colors"),
        row(id="i2", images=["img0.png", "img1.png", "img2.png"], category="animals",
            question="which of <image 3> and <image 1> ?", options=["<image 2>", "cat"],
            answer="B"),
        row(id="i3", images=["img2.png"], question="what is this ?", options=["cat", "dog"],
            answer="B"),
    ]  # fmt: skip
    return write_rows(folder / "quiz.jsonl", rows)


def job(quiz: Path, model_dir: Path, **section: Any) -> JobSpec:
    raw = {
        "name": "t",
        "model": {"path": str(model_dir)},
        "datasets": {"quiz": {"kind": "mcq", "train": str(quiz), "eval": str(quiz), **section}},
        "training": {"max_steps": 1},
    }
    return validate_spec(raw)


def part_of(spec: JobSpec, checkpoint: Path, out: Path, **kw: Any) -> EvalPart:
    base = dict(
        step=1, dataset="quiz", kind="mcq", checkpoint=str(checkpoint),
        dataset_spec=spec.datasets["quiz"].model_dump(mode="json"),
        model_spec=spec.model.model_dump(mode="json") | {"attn_implementation": "sdpa"},
        eval_ratio=1.0, partial=False, seed=0, batch_size=2, out=str(out),
        metrics=list(spec.declared_metrics("quiz")),
    )  # fmt: skip
    return EvalPart(**(base | kw))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- prompts
# Expected texts as lmms-eval 0.7.3's own functions return them for the same documents
# (mmbench_doc_to_text, mmmu_doc_to_messages, sqa_doc_to_text, run in its venv).


def test_mmstar_prompt_is_lmms_evals() -> None:
    """mmstar_doc_to_text (default kwargs) on MMStar's own question texts, options inline."""
    raw = (
        "Which option describe the object relationship in the image correctly?\nOptions: A: The "
        "suitcase is on the book., B: The suitcase is beneath the cat., C: The suitcase is "
        "beneath the bed., D: The suitcase is beneath the book.  "
    )
    options = ("The suitcase is on the book.", "The suitcase is beneath the cat.",
               "The suitcase is beneath the bed.", "The suitcase is beneath the book.")  # fmt: skip
    post = "\nAnswer with the option's letter from the given choices directly"
    head = "Which option describe the object relationship in the image correctly?"
    kept = mcq_row(question=head, options=options, text=raw)
    assert build_prompt(kept, "mmstar").text == raw.strip() + post
    # Without the source's text the question is rebuilt in MMStar's form: the same prompt.
    assert (
        build_prompt(mcq_row(question=head, options=options), "mmstar").text == raw.strip() + post
    )
    asked = "Is the man happy? Please answer yes or no.\nOptions: A: yes, B: no"
    yes_no = mcq_row(question="q", options=("yes", "no"), text=asked)
    assert build_prompt(yes_no, "mmstar").text == (
        f"Is the man happy?\nOptions: A: yes, B: no{post}"
    )


def test_mmbench_prompt_is_lmms_evals() -> None:
    r = mcq_row(question="What is the main color of the object?", hint="Look at the car.",
                options=("red", "blue", "green"), answer="B")  # fmt: skip
    assert build_prompt(r, "mmbench").text == (
        "Look at the car. What is the main color of the object? There are several options:\n"
        f"A. red\nB. blue\nC. green\n\n{POST}"
    )
    for no_hint in (None, "nan"):
        r = mcq_row(question="What is the main color of the object?", hint=no_hint,
                    options=("red", "blue", "green", "yellow"))  # fmt: skip
        assert build_prompt(r, "mmbench").text == (
            "What is the main color of the object? There are several options:\n"
            f"A. red\nB. blue\nC. green\nD. yellow\n\n{POST}"
        )


def test_mmmu_prompt_places_images_at_their_markers_as_lmms_eval() -> None:
    images = tuple(Path(f"/img{k}.png") for k in (1, 2, 3))
    r = mcq_row(question="<image 1> What is shown in <image 2>?", images=images,
                options=("a cat", "a dog", "<image 3>"), hint="MMMU has no hint")  # fmt: skip
    p = build_prompt(r, "mmmu")
    assert p.text == f"<image> What is shown in <image>?\nA. a cat\nB. a dog\nC. <image>\n\n{POST}"
    assert p.layout == (None, "What is shown in", None, "?\nA. a cat\nB. a dog\nC.", None, POST)
    assert p.images == images
    # lmms-eval's quirks, kept: images in marker-number order, one per marker number, placed at
    # the placeholders in text order; the text between a repeated marker's copies is dropped.
    r = mcq_row(question="Compare <image 2> with <image 1> and <image 2>.", images=images,
                options=("same", "different"))  # fmt: skip
    p = build_prompt(r, "mmmu")
    assert p.layout == ("Compare", None, "with", None, f".\nA. same\nB. different\n\n{POST}")
    assert p.images == images[:2]


def test_scienceqa_prompt_is_lmms_evals() -> None:
    r = mcq_row(question="Which organism is a producer?", options=("grass", "rabbit", "fox"),
                hint="The diagram shows a food web.")  # fmt: skip
    choices = "A. grass\nB. rabbit\nC. fox"
    assert build_prompt(r, "scienceqa").text == (
        f"Context: The diagram shows a food web.\nWhich organism is a producer?\n{choices}\n{POST}"
    )
    for no_hint in (None, ""):
        r = mcq_row(question="Which organism is a producer?", options=("grass", "rabbit", "fox"),
                    hint=no_hint)  # fmt: skip
        assert build_prompt(r, "scienceqa").text == (
            f"Which organism is a producer?\n{choices}\n{POST}"
        )


def test_the_layout_puts_image_tokens_where_the_markers_were(
    quiz: Path, letters_model: Path
) -> None:
    enc = VQAEncoder(letters_model)
    rows = {r.id: r for r in read_mcq_manifest(quiz, "quiz")}
    encoded = enc.encode(to_vqa_sample(rows["i1"], "mmmu"), ImageConfig(56, 56))
    text = str(enc.tokenizer.decode(encoded.input_ids))
    assert text.startswith("<|im_start|> user what is <|vision_start|> <|image_pad|>")
    assert encoded.n_images == 2
    # Every other style: all images first, then the text.
    encoded = enc.encode(to_vqa_sample(rows["i1"], "mmbench"), ImageConfig(56, 56))
    text = str(enc.tokenizer.decode(encoded.input_ids))
    assert text.startswith("<|im_start|> user <|vision_start|>")


# --------------------------------------------------------------------------- rows


def test_every_bad_row_is_reported_with_its_file_line_and_id(tmp_path: Path) -> None:
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    rows = [
        row(id="ok", images=["a.png"]),
        row(id="few", options=["only"]),
        row(id="many", options=[f"o{i}" for i in range(11)]),
        row(id="letter", options=["a", "b", "c", "d"], answer="E"),
        row(id="marker", images=["a.png"], question="is <image 2> bigger ?"),
        row(id="gone", images=["nope.png"]),
        {k: v for k, v in row(id="noq").items() if k != "question"},
        row(id="ok"),
    ]
    manifest = write_rows(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError) as e:
        read_mcq_manifest(manifest, "quiz")
    msg = str(e.value)
    assert "7 problem(s)" in msg
    expected = [
        (2, "few", "1 option(s); a multiple-choice row has 2 to 10"),
        (3, "many", "11 option(s); a multiple-choice row has 2 to 10"),
        (4, "letter", "answer 'E' is not one of the option letters ABCD"),
        (5, "marker", "the text refers to <image 2> but the row has 1 image(s)"),
        (6, "gone", "image 'nope.png' not found (looked in: "),
        (7, "noq", "missing field(s) question"),
    ]
    for line, rid, problem in expected:
        assert f"{manifest}:{line} (id {rid!r}): {problem}" in msg, (line, msg)
    assert f"{manifest}:8: duplicate id 'ok' (first on line 1)" in msg, msg
    manifest = write_rows(tmp_path / "good.jsonl", rows[:1])
    (good,) = read_mcq_manifest(manifest, "quiz")
    assert good.images == ((tmp_path / "a.png").resolve(),) and good.line == 1


def test_mmbench_matching_rejects_eval_rows_beyond_its_four_options(
    quiz: Path, letters_model: Path
) -> None:
    spec = job(quiz, letters_model, option_matching="mmbench")
    ds = spec.datasets["quiz"]
    assert len(KIND.read("quiz", ds, "train")) == 6  # training reads no letter
    with pytest.raises(DataError, match=r"quiz.jsonl:4 \(id 'i1'\): 5 options; option_matching"):
        KIND.read("quiz", ds, "eval")


def test_an_mcq_dataset_validates_and_its_keys_belong_to_it_alone(
    quiz: Path, letters_model: Path
) -> None:
    metrics = ["accuracy", "loss", "mcq_accuracy", "mmbench_accuracy", "mmmu_accuracy",
               "scienceqa_accuracy"]  # fmt: skip
    spec = job(quiz, letters_model, prompt_style="mmmu", scoring="likelihood", metrics=metrics)
    ds = spec.datasets["quiz"]
    assert isinstance(ds, MCQSpec) and ds.scoring == "likelihood" and ds.max_new_tokens == 8
    assert spec.declared_metrics("quiz") == tuple(metrics)
    assert job(quiz, letters_model).declared_metrics("quiz") == ("accuracy", "loss")
    raw = {
        "name": "t", "model": {"path": "m"}, "training": {"max_steps": 1},
        "datasets": {"digits": {"train": "x", "eval": "x", "num_classes": 10, "scoring": "x"}},
    }  # fmt: skip
    with pytest.raises(SpecError, match=r"datasets\.digits\.scoring: unknown key"):
        validate_spec(raw)
    with pytest.raises(SpecError, match=r"datasets\.quiz\.prompt_style"):
        job(quiz, letters_model, prompt_style="seedbench")
    with pytest.raises(SpecError, match=r"top5_accuracy needs sample fields \['top5'\]"):
        job(quiz, letters_model, metrics=["top5_accuracy"])


# --------------------------------------------------------------------------- training


def test_training_batches_supervise_the_answer_letter_only(quiz: Path, letters_model: Path) -> None:
    spec = job(quiz, letters_model, prompt_style="mmmu")
    rows = KIND.read("quiz", spec.datasets["quiz"], "train")
    batch = KIND.collator(spec)([("quiz", r) for r in rows])
    assert batch.ids == [r.id for r in rows] and not batch.anchored
    tok = VQAEncoder(letters_model).tokenizer
    for i, r in enumerate(rows):
        answer = batch.targets[(batch.segments == i) & (batch.targets != IGNORE)]
        assert str(tok.decode(answer)).split() == [r.answer, "<|im_end|>"], r.id


def test_a_batch_without_images_carries_a_zero_weighted_vision_anchor(
    quiz: Path, letters_model: Path, model: VLMClassifier
) -> None:
    """Every rank must run the vision tower (ZeRO reduces gradients bucket by bucket): a share
    of text-only rows gets one blank-image sample whose loss weighs nothing."""
    spec = job(quiz, letters_model)
    rows = KIND.read("quiz", spec.datasets["quiz"], "train")
    text_only = [("quiz", r) for r in rows if not r.images]
    batch = KIND.collator(spec)(text_only)
    assert batch.anchored and batch.ids == ["t0", "t1"] and batch.n_computed == 3
    assert batch.image_grid_thw.tolist() == [[1, 2, 2]]  # one merged token
    assert (batch.pixel_values == batch.pixel_values[0]).all()  # a uniform image: equal patches
    loss, ok = KIND.forward(model, batch, CPU, torch.float32, "sdpa")
    assert loss.shape == ok.shape == (2,)
    loss.sum().backward()
    vision = [p.grad for n, p in model.named_parameters() if ".visual." in n]
    assert vision and all(g is not None and not g.any() for g in vision)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # the anchor changes no real sample's loss
        alone, _ = KIND.forward(
            model, KIND.collator(spec)(text_only[:1]), CPU, torch.float32, "sdpa"
        )
    torch.testing.assert_close(loss[:1].detach(), alone)
    assert not KIND.collator(spec)([("quiz", r) for r in rows[1:3]]).anchored


def test_option_encodings_and_prompts_equal_the_encoders_own(
    quiz: Path, letters_model: Path
) -> None:
    enc, cfg = VQAEncoder(letters_model), ImageConfig(56, 56)
    r = next(r for r in read_mcq_manifest(quiz, "quiz") if r.id == "i1")
    for letter, e in zip(r.letters, option_encodings(enc, r, "mmmu", cfg), strict=True):
        full = enc.encode(to_vqa_sample(r, "mmmu", letter), cfg)
        assert torch.equal(e.input_ids, full.input_ids) and torch.equal(e.labels, full.labels)
        assert torch.equal(e.pixel_values, full.pixel_values)
    full = enc.encode(to_vqa_sample(r, "mmmu"), cfg)
    assert torch.equal(
        prompt_of(full).input_ids, enc.encode_prompt(to_vqa_sample(r, "mmmu"), cfg).input_ids
    )


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("matching", ["mcq", "mmbench"])
def test_generate_scoring_gives_one_record_per_row_with_a_valid_choice(
    quiz: Path, letters_model: Path, model: VLMClassifier, tmp_path: Path, matching: str
) -> None:
    """The first batch of two holds text-only rows only (generation without any image)."""
    spec = job(quiz, letters_model, option_matching=matching, max_new_tokens=3)
    part = part_of(spec, letters_model, tmp_path / "r.json")
    rows = KIND.read("quiz", spec.datasets["quiz"], "train")  # train: mmbench's limit is eval's
    with torch.no_grad():
        out = KIND.evaluate(part, model, rows, CPU)
    assert [r["id"] for r in out.records] == [r.id for r in rows]
    for rec, r in zip(out.records, rows, strict=True):
        assert set(rec) == KIND.record_fields
        allowed = set(r.letters) | ({""} if matching == "mmbench" else set())
        assert rec["choice"] in allowed and isinstance(rec["prediction"], str)
        assert rec["correct"] == float(rec["choice"] == r.answer) and rec["loss"] > 0
    assert out.examples == out.records[:20]


def test_likelihood_scoring_picks_the_option_of_highest_log_likelihood(
    quiz: Path, letters_model: Path, model: VLMClassifier, tmp_path: Path
) -> None:
    """Checked against each option run alone through transformers' own (unpacked) path."""
    spec = job(quiz, letters_model, prompt_style="mmmu", scoring="likelihood")
    part = part_of(spec, letters_model, tmp_path / "r.json", batch_size=4)
    rows = KIND.read("quiz", spec.datasets["quiz"], "eval")
    with torch.no_grad():
        out = KIND.evaluate(part, model, rows, CPU)
    assert len(out.records) == len(rows)
    enc, cfg = VQAEncoder(letters_model), ImageConfig(448)
    for r, rec in zip(rows, out.records, strict=True):
        if r.id not in {"t0", "i1"}:  # one text-only row, one of two images and 5 options
            continue
        logp, losses = [], []
        for letter in r.letters:
            e = enc.encode(to_vqa_sample(r, "mmmu", letter), cfg)
            ids = e.input_ids[None]
            vision = (
                {"pixel_values": e.pixel_values, "image_grid_thw": e.image_grid_thw}
                if e.n_images
                else {}
            )
            with torch.no_grad():
                hidden = model.backbone(
                    input_ids=ids, mm_token_type_ids=(ids == enc.image_token_id).int(),
                    use_cache=False, **vision,
                ).last_hidden_state[0, :-1]  # fmt: skip
                target = e.labels[1:]
                keep = target != IGNORE
                lm = model.vlm.lm_head(hidden[keep])  # type: ignore[operator]
                tok = torch.nn.functional.cross_entropy(lm, target[keep], reduction="none")
            logp.append(-float(tok.sum()))
            losses.append(float(tok.mean()))
        best = r.letters[max(range(len(logp)), key=logp.__getitem__)]
        assert rec["choice"] == rec["prediction"] == best, (r.id, logp)
        assert rec["loss"] == pytest.approx(losses[r.letters.index(r.answer)], rel=1e-4)


def test_accuracy_per_category(quiz: Path, letters_model: Path, tmp_path: Path) -> None:
    from workers.kinds.mcq import breakdowns

    records = [{"category": c, "correct": k} for c, k in
               [("a", 1.0), ("a", 0.0), ("b", 1.0), (None, 0.0)]]  # fmt: skip
    assert breakdowns(records) == {"per_category_accuracy": {"(none)": 0.0, "a": 0.5, "b": 1.0}}
    assert breakdowns([{"category": None, "correct": 1.0}]) == {}


def test_a_part_writes_the_mcq_metrics(
    quiz: Path, letters_model: Path, model: VLMClassifier, tmp_path: Path
) -> None:
    """Through run_eval, from a saved checkpoint: the records carry what the choice metrics
    read, and with likelihood scoring MMMU's parser reads the chosen letter back."""
    from workers.evaluate import run_eval
    from workers.models.classifier import save_classifier

    metrics = ["accuracy", "loss", "mcq_accuracy", "mmbench_accuracy"]
    spec = job(quiz, letters_model, scoring="likelihood", metrics=metrics)
    hf = tmp_path / "step_000001" / "hf"
    save_classifier(model, hf, letters_model, {"quiz": KIND.head_info(spec.datasets["quiz"])})
    result = run_eval(part_of(spec, hf, tmp_path / "quiz.json"))
    assert result["n"] == 6 and set(result["metrics"]) == set(metrics)
    assert result["metrics"]["mcq_accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    correct = [s["correct"] for s in result["samples"]]
    assert result["metrics"]["accuracy"] == pytest.approx(sum(correct) / 6)
    by_category: dict[str, list[float]] = {}
    for s in result["samples"]:
        by_category.setdefault(s["category"] or "(none)", []).append(s["correct"])
    assert result["breakdowns"]["per_category_accuracy"] == {
        c: pytest.approx(sum(v) / len(v)) for c, v in by_category.items()
    }
    assert json.loads((tmp_path / "quiz.json").read_text())["metrics"] == result["metrics"]


# --------------------------------------------------------------------------- doctor


def test_doctor_names_what_a_prompt_style_leaves_out_and_letters_a_tokenizer_merges(
    quiz: Path, letters_model: Path, no_letters_model: Path, model: VLMClassifier
) -> None:
    spec = job(quiz, letters_model, prompt_style="mmmu")
    findings = KIND.doctor(spec, "quiz", None)
    warnings = [f.message for f in findings if f.level == "warning"]
    assert any("2 row(s) have a hint" in w for w in warnings), findings
    assert any("2 row(s) have images no <image k> marker names" in w for w in warnings)
    assert findings[-1].message.startswith("quiz: 6 rows, 2-5 options, answers A 50%, B 50%")
    letters, packed = KIND.doctor(spec, "quiz", model)
    assert letters.level == packed.level == "ok", (letters, packed)
    # four rows, each supervised on its letter and the end of its turn
    assert "4 rows packed into 1 row(s), 8 answer tokens supervised" in packed.message
    (letters, _) = KIND.doctor(job(quiz, no_letters_model), "quiz", model)
    assert letters.level == "error" and "option letter A" in letters.message


def test_a_row_too_long_for_a_pack_is_rejected_before_compute(
    quiz: Path, letters_model: Path, tmp_path: Path
) -> None:
    """orch validate's row check: every row tokenised as training encodes it (prompt, images,
    answer letter); the too-long one is named by file, line and id, the others pass."""
    from orchestrator.checks.validate import validate_data
    from orchestrator.contract.errors import DataError

    rows = [json.loads(x) for x in quiz.read_text().splitlines()]
    rows[2]["hint"] = "a long hint " * 2000  # line 3
    manifest = write_rows(tmp_path / "quiz.jsonl", rows)
    for name in ("img0.png", "img1.png", "img2.png"):
        (tmp_path / name).write_bytes((quiz.parent / name).read_bytes())
    base = job(manifest, letters_model)
    spec = base.model_copy(
        update={"training": base.training.model_copy(update={"pack_max_tokens": 512})}
    )
    with pytest.raises(DataError) as e:
        validate_data(spec)
    text = str(e.value)
    assert f"{manifest}:3: sample 'i0' has " in text and "at most 512 tokens" in text
    assert text.count("a pack holds at most") == 2  # train and eval name the same manifest

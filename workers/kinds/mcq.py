"""Multiple-choice questions (MMBench, MMMU, ScienceQA ...): images (none, one or several), a
question and 2-10 options; the answer is an option letter.

A row trains as a one-turn VQA sample (the prompt lmms-eval builds, then the letter as the
answer: workers/data/mcq.py) through the VQA encoder, packing and answer-only loss. Evaluation
scores each row one of two ways (``scoring``):

- ``generate``: a greedy answer, the letter read out of it with lmms-eval's rules (MMMU's
  ``parse_multi_choice_response``, or MMBench's ``can_infer`` matching);
- ``likelihood``: no generation; the letter whose answer has the highest teacher-forced
  log-likelihood, every option of a row in one packed batch. A smooth signal for early
  checkpoints, which rarely answer in the expected format.

Rows: ``{"id", "dataset_name", "images", "question", "hint", "options", "answer", "category",
"group"}`` (workers/data/mcq.py). Per-sample eval records: ``id, prediction, choice, answer,
options, category, group, correct, loss``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.kinds import EvalOutput, Finding, Split
from orchestrator.contract.spec import DatasetSpec, JobSpec
from workers.kinds.streamed import StreamedKind

if TYPE_CHECKING:
    import torch

    from workers.data.mcq import MCQBatch, MCQRow
    from workers.data.vqa import ImageConfig, VQAEncoder

MMBENCH_OPTIONS = 4
"""MMBench's option matching reads options A-D (lmms-eval's build_choices, can_infer_text)."""


class MCQSpec(DatasetSpec):
    """A multiple-choice dataset of the mix (next-token loss on the answer letter)."""

    kind: Literal["mcq"] = "mcq"
    prompt_style: Literal["mmbench", "mmmu", "scienceqa", "mmstar"] = "mmbench"
    """How a row becomes the prompt, exactly as lmms-eval 0.7.3's task of that name builds it
    (workers/data/mcq.py): mmbench (hint, question, "There are several options:" and the
    options), mmmu (question and options, images placed at their <image k> markers),
    scienceqa ("Context: hint", question, options) or mmstar (the question with its inline
    options, as MMStar phrases it)."""
    scoring: Literal["generate", "likelihood"] = "generate"
    """Evaluation: generate an answer and read its letter, or pick the letter of highest
    log-likelihood (no generation)."""
    option_matching: Literal["mcq", "mmbench"] = "mcq"
    """How a generated answer's letter is read (scoring = "generate"): mcq, MMMU's
    parse_multi_choice_response (a letter is always found: a random one, seeded per row, when
    the answer names none); mmbench, MMBench's can_infer then extract_mcq_answer (options A-D
    only; no letter found counts as wrong)."""
    max_new_tokens: int = Field(default=8, ge=1)
    """Tokens generated per answer (scoring = "generate")."""
    max_image_side: int = Field(default=448, ge=28)
    """Images are resized keeping the aspect ratio so the long side is at most this, both sides a
    multiple of the patch size times the merge size."""
    min_image_side: int = Field(default=0, ge=0)
    """Smaller images are upscaled (aspect ratio kept) until the short side reaches this."""

    def image_config(self) -> ImageConfig:
        from workers.data.vqa import ImageConfig

        return ImageConfig(self.max_image_side, self.min_image_side)


def _section(ds: DatasetSpec) -> MCQSpec:
    assert isinstance(ds, MCQSpec)
    return ds


@dataclass
class MCQCollator:
    """(dataset, MCQRow) picks -> one MCQBatch (rows of at most pack_max_tokens)."""

    spec: JobSpec
    _encoder: VQAEncoder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_encoder": None}  # rebuilt in the process that uses it

    @property
    def encoder(self) -> VQAEncoder:
        from workers.data.vqa import VQAEncoder

        if self._encoder is None:
            self._encoder = VQAEncoder(Path(self.spec.model.path))
        return self._encoder

    def __call__(self, picks: Sequence[tuple[str, Any]]) -> MCQBatch:
        from workers.data.mcq import anchor_image, anchor_sample, as_mcq_batch, to_vqa_sample
        from workers.data.vqa import best_fit_rows, pack

        enc, tr = self.encoder, self.spec.training
        encoded = []
        for name, row in picks:
            ds = _section(self.spec.datasets[name])
            encoded.append(enc.encode(to_vqa_sample(row, ds.prompt_style), ds.image_config()))
        anchored = not any(e.n_images for e in encoded)
        if anchored:
            anchor = anchor_sample(picks[0][0])
            encoded.append(enc.encode_decoded(anchor, [anchor_image(enc.multiple)]))
        rows = best_fit_rows(
            [e.n_tokens for e in encoded],
            [e.n_images for e in encoded],
            tr.pack_max_tokens,
            tr.pack_max_images,
        )
        return as_mcq_batch(
            pack(encoded, rows, enc.image_token_id, enc.merge, enc.pad_id), anchored
        )


class MCQKind(StreamedKind["MCQRow"]):
    name = "mcq"
    spec: type[DatasetSpec] = MCQSpec
    default_metrics: tuple[str, ...] = ("accuracy", "loss")
    record_fields = frozenset(
        {"id", "prediction", "choice", "answer", "options", "category", "group", "correct", "loss"}
    )

    def stream(
        self,
        name: str,
        ds: DatasetSpec,
        split: Split,
        configured: Sequence[str],
        problems: list[str],
    ) -> Iterator[MCQRow]:
        from workers.data.mcq import iter_mcq_manifest

        m = _section(ds)
        path = m.manifest(split)
        if split == "eval" and m.scoring == "generate" and m.option_matching == "mmbench":
            reason = (
                'option_matching = "mmbench" reads options A-D only (MMBench\'s build_choices '
                'and can_infer_text); use option_matching = "mcq"'
            )
            return iter_mcq_manifest(
                path,
                name,
                problems,
                m.image_roots,
                max_options=MMBENCH_OPTIONS,
                limit_reason=reason,
            )
        return iter_mcq_manifest(path, name, problems, m.image_roots)

    def images(self, row: MCQRow) -> list[tuple[int, Path]]:
        return [(row.line, p) for p in row.images]

    def eval_subset(self, rows: Sequence[MCQRow], ratio: float, seed: int) -> list[MCQRow]:
        """Seeded subset, the same share of every category (at least one row each)."""
        from workers.data.subset import stratified

        return stratified(rows, ratio, seed, key=lambda r: r.category or "")

    def collator(self, spec: JobSpec) -> MCQCollator:
        return MCQCollator(spec)

    def forward(
        self, engine: Any, batch: MCQBatch, device: Any, dtype: Any, attn: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from workers.data.vqa import per_sample_loss

        targets = batch.targets.to(device)
        logits = engine(**batch.model_inputs(device, dtype, attn), targets=targets)
        loss, ok = per_sample_loss(logits, targets, batch.segments.to(device), batch.n_computed)
        n = batch.n_samples
        if batch.anchored:  # the anchor ties the vision tower into the graph, weighing nothing
            return loss[:n] + 0.0 * loss[n], ok[:n]
        return loss, ok

    def evaluate(
        self, part: EvalPart, model: Any, rows: Sequence[MCQRow], device: Any
    ) -> EvalOutput:
        """One record per row (the chosen letter, whether it is right, the teacher-forced loss
        of the gold letter), accuracy per category, the first 20 records as examples."""
        from workers.data.vqa import VQAEncoder

        ds = _section(part.dataset_section())
        encoder = VQAEncoder(Path(part.checkpoint))
        score = _likelihood_records if ds.scoring == "likelihood" else _generate_records
        records: list[dict[str, Any]] = []
        for chunk in _chunks(rows, part.batch_size, ds.scoring == "likelihood"):
            records += score(ds, model, encoder, chunk, device)
        return EvalOutput(records, breakdowns=breakdowns(records), examples=records[:20])

    def check_rows(
        self, spec: JobSpec, name: str, manifest: Path, rows: Sequence[MCQRow]
    ) -> list[str]:
        """Every row tokenised as training will (its prompt and answer letter, exact counts, no
        pixel decoded): a row too long for a pack is an error with file, line and id."""
        from workers.data.mcq import to_vqa_sample
        from workers.kinds.vqa import count_lengths, pack_budget_problems

        ds = _section(spec.datasets[name])
        samples = [to_vqa_sample(r, ds.prompt_style) for r in rows]
        lengths = count_lengths(spec, samples, ds.image_config())
        return pack_budget_problems(spec, manifest, samples, lengths)

    def doctor(self, spec: JobSpec, name: str, model: Any | None) -> list[Finding]:
        """Without a model: what the prompt style leaves out of the rows, and the answer
        letters' shares. With one: the option letters are distinct tokens, and a real packed
        batch has finite losses on the answer letters only."""
        ds = _section(spec.datasets[name])
        splits: list[Split] = ["train", "eval"]
        if ds.train is None or ds.train == ds.eval:  # eval-only, or one manifest for both
            splits = ["eval" if ds.train is None else "train"]
        if model is None:
            return _data_findings(name, ds, [r for s in splits for r in self.read(name, ds, s)])
        rows = self.read(name, ds, splits[0])
        letters = max((r.letters for r in rows), key=len)
        return [_letter_tokens(spec, name, letters), _packed_batch(spec, name, model, rows[:4])]

    def head_info(self, ds: DatasetSpec) -> dict[str, Any]:
        return {"kind": self.name, "num_classes": 0, "labels": None}


def breakdowns(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Accuracy per category (rows without one under "(none)"), when any row has one."""
    if all(r["category"] is None for r in records):
        return {}
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r["category"] or "(none)", []).append(float(r["correct"]))
    return {"per_category_accuracy": {c: sum(v) / len(v) for c, v in sorted(by.items())}}


def _chunks(rows: Sequence[MCQRow], size: int, by_options: bool) -> list[list[MCQRow]]:
    """Consecutive rows, ``size`` at a time; with ``by_options``, as many as keep their options
    within ``size`` sequences (a row's options are never split)."""
    if not by_options:
        return [list(rows[i : i + size]) for i in range(0, len(rows), size)]
    chunks: list[list[MCQRow]] = []
    n = 0
    for r in rows:
        if chunks and n + len(r.options) <= size:
            chunks[-1].append(r)
            n += len(r.options)
        else:
            chunks.append([r])
            n = len(r.options)
    return chunks


def _record(row: MCQRow, prediction: str, choice: str, loss: float) -> dict[str, Any]:
    return {
        "id": row.id,
        "prediction": prediction,
        "choice": choice,
        "answer": row.answer,
        "options": list(row.options),
        "category": row.category,
        "group": row.group,
        "correct": float(choice == row.answer),
        "loss": loss,
    }


def _generate_records(
    ds: MCQSpec, model: Any, encoder: VQAEncoder, rows: Sequence[MCQRow], device: Any
) -> list[dict[str, Any]]:
    """Greedy answers (one left-padded batch), each one's letter as lmms-eval reads it, and
    the teacher-forced loss of the gold letter."""
    from workers.data.mcq import answer_scores, prompt_of, to_vqa_sample
    from workers.evaluate import generate_answers

    cfg = ds.image_config()
    full = [encoder.encode(to_vqa_sample(r, ds.prompt_style), cfg) for r in rows]
    answers = generate_answers(
        model, encoder, [prompt_of(e) for e in full], ds.max_new_tokens, device
    )
    loss, _ = answer_scores(model, encoder, full, device)
    return [
        _record(r, pred, choose(ds.option_matching, pred, r), float(sample_loss))
        for r, pred, sample_loss in zip(rows, answers, loss.tolist(), strict=True)
    ]


def choose(option_matching: str, prediction: str, row: MCQRow) -> str:
    """The letter a generated answer gives: MMMU's ``parse_multi_choice_response`` (its random
    guess, when the answer names no option, seeded per row as orch's mcq_accuracy seeds it), or
    MMBench's ``mmbench_row_letter`` ("" when the answer names none)."""
    from workers.metrics import get_multi_choice_info, mmbench_row_letter
    from workers.metrics import parse_multi_choice_response as parse
    from workers.metrics.registry import sample_rng

    if option_matching == "mmbench":
        return mmbench_row_letter(prediction.strip(), row.options)
    index2ans, all_choices = get_multi_choice_info(row.options)
    return parse(prediction.strip(), all_choices, index2ans, rng=sample_rng({"id": row.id}))


def _likelihood_records(
    ds: MCQSpec, model: Any, encoder: VQAEncoder, rows: Sequence[MCQRow], device: Any
) -> list[dict[str, Any]]:
    """Every option letter as the answer, teacher-forced, the rows' options in one packed
    batch: the letter of the highest summed log-likelihood (the first on a tie) is the choice
    and the prediction; the loss is the gold letter's."""
    from workers.data.mcq import answer_scores, option_encodings

    cfg = ds.image_config()
    per_row = [option_encodings(encoder, r, ds.prompt_style, cfg) for r in rows]
    loss, logp = answer_scores(model, encoder, [e for es in per_row for e in es], device)
    records: list[dict[str, Any]] = []
    at = 0
    for r in rows:
        scores = logp[at : at + len(r.options)].tolist()
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        gold = float(loss[at + r.letters.index(r.answer)])
        records.append(_record(r, r.letters[best], r.letters[best], gold))
        at += len(r.options)
    return records


def _data_findings(name: str, ds: MCQSpec, rows: Sequence[MCQRow]) -> list[Finding]:
    from collections import Counter

    from workers.data.mcq import build_prompt

    findings: list[Finding] = []
    if ds.prompt_style == "mmmu":
        hinted = sum(r.hint is not None for r in rows)
        unseen = sum(len(build_prompt(r, ds.prompt_style).images) < len(r.images) for r in rows)
        if hinted:
            findings.append(
                Finding(
                    "warning",
                    "mcq",
                    f"{name}: {hinted} row(s) have a hint, which prompt_style mmmu leaves out "
                    "(lmms-eval's MMMU prompt has none)",
                    'use prompt_style "mmbench" or "scienceqa" to show hints',
                )
            )
        if unseen:
            findings.append(
                Finding(
                    "warning",
                    "mcq",
                    f"{name}: {unseen} row(s) have images no <image k> marker names; prompt_style "
                    "mmmu passes only the named ones (as lmms-eval's mmmu_doc_to_visual)",
                    "add the markers to the text, or drop the unused images",
                )
            )
    letters = Counter(r.answer for r in rows)
    shares = ", ".join(f"{k} {v / len(rows):.0%}" for k, v in sorted(letters.items()))
    sizes = sorted({len(r.options) for r in rows})
    text_only = sum(not r.images for r in rows)
    findings.append(
        Finding(
            "ok",
            "mcq",
            f"{name}: {len(rows)} rows, {sizes[0]}-{sizes[-1]} options, answers {shares}, "
            f"{text_only} without an image",
        )
    )
    return findings


def _letter_tokens(spec: JobSpec, name: str, letters: str) -> Finding:
    """Every option letter is its own token sequence: otherwise no answer can be told apart."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(spec.model.path), local_files_only=True)
    seen: dict[tuple[int, ...], str] = {}
    for letter in letters:
        ids = tuple(tok(letter, add_special_tokens=False)["input_ids"])
        if ids in seen or tok.unk_token_id in ids:
            return Finding(
                "error",
                "mcq",
                f"{name}: the tokenizer cannot tell option letter {letter} apart "
                f"({'the same tokens as ' + seen[ids] if ids in seen else 'unknown token'})",
                f"use a model whose vocabulary has the letters {letters}",
            )
        seen[ids] = letter
    return Finding("ok", "mcq", f"{name}: option letters {letters} are distinct tokens")


def _packed_batch(spec: JobSpec, name: str, model: Any, rows: Sequence[MCQRow]) -> Finding:
    """A few real rows packed: finite losses, every sample supervised on its answer only."""
    import torch

    from workers.data.vqa import IGNORE, per_sample_loss

    try:
        batch = MCQCollator(spec)([(name, r) for r in rows])
        attn = str(model.hf_config._attn_implementation)
        with torch.no_grad():
            logits = model(
                **batch.model_inputs(torch.device("cpu"), torch.float32, attn),
                targets=batch.targets,
            )
        loss, _ = per_sample_loss(logits, batch.targets, batch.segments, batch.n_computed)
    except ValueError as e:
        return Finding("error", "mcq", f"{name}: {e}", "check the chat template and the data")
    if not bool(torch.isfinite(loss).all()):
        return Finding(
            "error", "mcq", f"{name}: non-finite loss on a real packed batch", "run with -v"
        )
    real = batch.segments < batch.n_samples  # not the vision anchor's
    supervised = int(((batch.targets != IGNORE) & real).sum())
    return Finding(
        "ok",
        "mcq",
        f"{name}: {batch.n_samples} rows packed into {len(batch.rows)} row(s), {supervised} "
        f"answer tokens supervised, finite losses (max {float(loss.max()):.3f})",
    )


KIND = MCQKind()

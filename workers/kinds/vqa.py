"""VQA and instruction data: images plus user/assistant turns, next-token loss on the answers,
greedy answers scored when evaluating.

Rows: ``{"id", "dataset_name", "images", "texts": [{"user", "assistant", "ratings"?}]}``
(FineVision's shape, workers/data/vqa). Per-sample eval records: ``id, prediction, reference,
references, correct (exact match), loss``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from orchestrator.contract.evalpart import EvalPart
from orchestrator.contract.kinds import EvalOutput, Finding, Split
from orchestrator.contract.spec import DatasetSpec, JobSpec
from workers.kinds.streamed import StreamedKind

if TYPE_CHECKING:
    import torch

    from workers.data.vqa import ImageConfig, PackedBatch, VQAEncoder, VQASample

RATINGS = ("relevance", "image_correspondence", "visual_dependency", "formatting")


logger = logging.getLogger(__name__)


class VQASpec(DatasetSpec):
    """A VQA / instruction dataset of the mix (generative: loss on the answer tokens)."""

    kind: Literal["vqa"] = "vqa"
    min_ratings: dict[str, int] = Field(default_factory=dict)
    """Drop turns whose quality rating is below these minimums (keys: relevance,
    image_correspondence, visual_dependency, formatting; 1-5). Counted and logged, never silent;
    a turn without that rating is kept."""
    max_image_side: int = Field(default=448, ge=28)
    """Images are resized keeping the aspect ratio so the long side is at most this, both sides a
    multiple of the patch size times the merge size."""
    min_image_side: int = Field(default=0, ge=0)
    """Smaller images are upscaled (aspect ratio kept) until the short side reaches this."""
    tile_size: int | None = Field(default=None, ge=28)
    """Split each image into tiles of this side plus one global view (none: no split)."""
    max_tiles: int = Field(default=4, ge=1)
    """At most this many tiles per image (the image is scaled down to fit)."""
    max_new_tokens: int = Field(default=16, ge=1)
    """Tokens generated per answer when evaluating."""

    @field_validator("min_ratings")
    @classmethod
    def _ratings(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(RATINGS))
        if unknown:
            raise ValueError(f"unknown rating(s) {unknown}; known: {list(RATINGS)}")
        bad = {k: r for k, r in v.items() if not 1 <= r <= 5}
        if bad:
            raise ValueError(f"ratings are 1-5, got {bad}")
        return v

    def image_config(self) -> ImageConfig:
        from workers.data.vqa import ImageConfig

        return ImageConfig(self.max_image_side, self.min_image_side, self.tile_size, self.max_tiles)


@dataclass
class VQACollator:
    """(dataset, VQASample) picks -> one PackedBatch (rows of at most pack_max_tokens)."""

    spec: JobSpec
    _encoder: VQAEncoder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_encoder": None}

    @property
    def encoder(self) -> VQAEncoder:
        from workers.data.vqa import VQAEncoder

        if self._encoder is None:
            self._encoder = VQAEncoder(Path(self.spec.model.path))
        return self._encoder

    def __call__(
        self, picks: Sequence[tuple[str, Any]], rows: list[list[int]] | None = None
    ) -> PackedBatch:
        """Encode and pack ``picks``: into ``rows`` when the plan packed them (by tokens, from
        the rows' exact lengths: training.batch_tokens), else best-fit among themselves."""
        from workers.data.vqa import best_fit_rows, pack

        enc, tr = self.encoder, self.spec.training
        encoded = [enc.encode(s, _section(self.spec.datasets[n]).image_config()) for n, s in picks]
        if rows is None:
            rows = best_fit_rows(
                [e.n_tokens for e in encoded],
                [e.n_images for e in encoded],
                tr.pack_max_tokens,
                tr.pack_max_images,
            )
        for row in rows:
            tokens = sum(encoded[i].n_tokens for i in row)
            if tokens > tr.pack_max_tokens:
                ids = [encoded[i].id for i in row]
                raise RuntimeError(
                    f"a planned row of {ids} encodes to {tokens} tokens, more than "
                    f"training.pack_max_tokens ({tr.pack_max_tokens}): the plan's lengths "
                    "(workers/data/budget.py) disagree with the encoder's; please report it"
                )
        return pack(encoded, rows, enc.image_token_id, enc.merge, enc.pad_id)


def _section(ds: DatasetSpec) -> VQASpec:
    assert isinstance(ds, VQASpec)
    return ds


class VQAKind(StreamedKind["VQASample"]):
    name = "vqa"
    spec: type[DatasetSpec] = VQASpec
    default_metrics: tuple[str, ...] = ("accuracy", "exact_match", "loss")
    record_fields = frozenset(
        {"id", "prediction", "reference", "references", "correct", "loss", "category", "group"}
    )

    def stream(
        self,
        name: str,
        ds: DatasetSpec,
        split: Split,
        configured: Sequence[str],
        problems: list[str],
    ) -> Iterator[VQASample]:
        from workers.data.vqa import FilterCounts, iter_vqa_manifest

        v = _section(ds)
        path = v.manifest(split)
        return iter_vqa_manifest(path, name, problems, FilterCounts(), v.image_roots, v.min_ratings)

    def images(self, row: VQASample) -> list[tuple[int, Path]]:
        return [(row.line, p) for p in row.images]

    def eval_subset(self, rows: Sequence[VQASample], ratio: float, seed: int) -> list[VQASample]:
        """Seeded subset, stratified by reference answer; rows of one group (MME's two questions
        of an image) are drawn together, as their metrics score them together."""
        from workers.data.subset import stratified

        def key(s: VQASample) -> str:
            return s.turns[-1].assistant.strip().lower()

        if not any(s.group is not None for s in rows):
            return stratified(rows, ratio, seed, key=key)
        units: dict[str, list[VQASample]] = {}
        for s in rows:
            units.setdefault(s.group if s.group is not None else f"row:{s.id}", []).append(s)
        chosen = stratified(list(units.values()), ratio, seed, key=lambda u: key(u[0]))
        return [s for unit in chosen for s in unit]

    def collator(self, spec: JobSpec) -> VQACollator:
        return VQACollator(spec)

    def forward(
        self, engine: Any, batch: PackedBatch, device: Any, dtype: Any, attn: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from workers.data.vqa import per_sample_loss

        targets = batch.targets.to(device)
        logits = engine(**batch.model_inputs(device, dtype, attn), targets=targets)
        return per_sample_loss(logits, targets, batch.segments.to(device), batch.n_samples)

    def evaluate(
        self, part: EvalPart, model: Any, rows: Sequence[VQASample], device: Any
    ) -> EvalOutput:
        """Greedy answers scored against the reference, and (when the dataset reports loss)
        the teacher-forced loss of the reference answers. Each sample is encoded once: its
        generation prompt is the encoding cut before the last answer."""
        from workers.data.vqa import VQAEncoder, answer_losses, before_last_answer
        from workers.evaluate import generate_answers

        ds = _section(part.dataset_section())
        encoder, cfg = VQAEncoder(Path(part.checkpoint)), ds.image_config()
        records: list[dict[str, Any]] = []
        for start in range(0, len(rows), part.batch_size):
            chunk = rows[start : start + part.batch_size]
            full = [encoder.encode(s, cfg) for s in chunk]
            prompts = [
                before_last_answer(e, s.turns[-1].assistant)
                for e, s in zip(full, chunk, strict=True)
            ]
            answers = generate_answers(model, encoder, prompts, ds.max_new_tokens, device)
            losses: list[float | None] = [None] * len(full)
            if "loss" in part.metrics:
                loss, _ = answer_losses(model, encoder, full, device)
                losses = [float(x) for x in loss.tolist()]
            for s, pred, sample_loss in zip(chunk, answers, losses, strict=True):
                ref = s.turns[-1].assistant
                records.append(
                    {
                        "id": s.id,
                        "prediction": pred,
                        "reference": ref,
                        "references": s.gold,
                        "correct": float(pred.strip().lower() == ref.strip().lower()),
                        "loss": sample_loss,
                        "category": s.category,
                        "group": s.group,
                    }
                )
        return EvalOutput(
            records,
            breakdowns=_breakdowns(records),
            examples=[{k: r[k] for k in ("id", "prediction", "reference")} for r in records[:20]],
        )

    def check_rows(
        self, spec: JobSpec, name: str, manifest: Path, rows: Sequence[VQASample]
    ) -> list[str]:
        """Every row tokenised as training will (exact counts, no pixel decoded): a sample
        that cannot fit a pack is an error with its file, line and id, before any compute. A
        warning when VQA accuracy is declared on rows with too few reference answers."""
        _warn_few_references(spec, name, manifest, rows)
        lengths = self.token_lengths(spec, name, rows)
        return pack_budget_problems(spec, manifest, rows, lengths)

    def token_lengths(self, spec: JobSpec, name: str, rows: Sequence[VQASample]) -> Any:
        """[rows, 2] int32: each row's training tokens and images, exact (workers/data/budget.py),
        for the pack budget check and for packing by tokens (training.batch_tokens). Over an
        index it is a column beside it, computed once (by the pre-flight) for this model and
        image settings."""
        import numpy as np

        from workers.data.index import RowIndex, column

        cfg = _section(spec.datasets[name]).image_config()

        def compute(rows: Sequence[VQASample]) -> np.ndarray:
            return count_lengths(spec, rows, cfg)

        if not isinstance(rows, RowIndex):
            return compute(rows)
        return column(rows, f"vqa_lengths-{_encoding_key(spec.model.path, cfg)}", compute)

    def doctor(self, spec: JobSpec, name: str, model: Any | None) -> list[Finding]:
        return [] if model is None else [_packed_batch(spec, name, model)]

    def head_info(self, ds: DatasetSpec) -> dict[str, Any]:
        return {"kind": self.name, "num_classes": 0, "labels": None}


LEAVE_ONE_OUT = ("vqa_accuracy", "vqav2_accuracy")


def _warn_few_references(
    spec: JobSpec, name: str, manifest: Path, rows: Sequence[VQASample]
) -> None:
    """VQA accuracy averages, over each reference left out, min(1, matches among the others /
    3): with k references a right answer scores at most min(1, (k - 1) / 3), 0 with one."""
    declared = [m for m in LEAVE_ONE_OUT if m in spec.declared_metrics(name)]
    few = [r for r in rows if len(r.gold) < 4]
    if declared and few:
        r = few[0]
        logger.warning(
            "datasets.%s: %d of %d rows have fewer than 4 reference answers, so %s cannot score "
            "them 1 (a right answer scores min(1, (k - 1) / 3) with k references, 0 with one): "
            "give every annotator's answer in references, or report exact_match. E.g. %s:%d "
            "(id %r, %d reference(s))",
            name, len(few), len(rows), " and ".join(declared), manifest, r.line, r.id, len(r.gold),
        )  # fmt: skip


def count_lengths(spec: JobSpec, rows: Iterable[VQASample], cfg: ImageConfig) -> Any:
    """[rows, 2] int32: the training tokens and images of each row (workers/data/budget.py)."""
    import numpy as np

    from workers.data.budget import BudgetCounter
    from workers.data.vqa import VQAEncoder

    count = BudgetCounter(VQAEncoder(Path(spec.model.path)))
    return np.array([count(r, cfg) for r in rows], dtype=np.int32).reshape(-1, 2)


def _encoding_key(model: Path, cfg: ImageConfig) -> str:
    """What a row's token count depends on beyond the row: the model folder's tokenizer and
    processor files (path, size, time) and the image settings."""
    import hashlib

    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in Path(model).iterdir()
        if p.suffix in (".json", ".jinja", ".txt", ".model")
    )
    what = repr((str(Path(model).absolute()), files, cfg))
    return hashlib.blake2b(what.encode(), digest_size=8).hexdigest()


def pack_budget_problems(
    spec: JobSpec, manifest: Path, rows: Sequence[VQASample], lengths: Any
) -> list[str]:
    """The rows whose training encoding (``lengths``: tokens and images of each row) exceeds
    training.pack_max_tokens / pack_max_images."""
    import numpy as np

    tr = spec.training
    if hasattr(lengths, "read"):  # an index's column
        lengths = lengths.read()
    over = np.flatnonzero(
        (lengths[:, 0] > tr.pack_max_tokens) | (lengths[:, 1] > tr.pack_max_images)
    )
    problems = []
    for i in over.tolist():
        row = rows[i]
        tokens, images = (int(v) for v in lengths[i])
        problems.append(
            f"{manifest}:{row.line}: sample {row.id!r} has {tokens} tokens and {images} "
            f"image(s); a pack holds at most {tr.pack_max_tokens} tokens and "
            f"{tr.pack_max_images} images (training.pack_max_tokens / pack_max_images): "
            "shorten the sample or raise the limit"
        )
    return problems


def _packed_batch(spec: JobSpec, name: str, model: Any) -> Finding:
    """Four real VQA samples packed into one row: every sample has supervised answer tokens, and
    the losses are finite."""
    import itertools

    import torch

    from workers.data.vqa import FilterCounts, iter_vqa_manifest, per_sample_loss

    ds = _section(spec.datasets[name])
    manifest = ds.train or ds.eval  # an eval-only dataset: its eval rows
    problems: list[str] = []
    counts = FilterCounts()
    stream = iter_vqa_manifest(manifest, name, problems, counts, ds.image_roots, ds.min_ratings)
    samples = list(itertools.islice(stream, 4))  # the first four: a manifest of any size
    if problems:
        return Finding("error", "vqa", f"{name}: {problems[0]}", "run `orch validate`")
    try:
        batch = VQACollator(spec)([(name, s) for s in samples])
        attn = str(model.hf_config._attn_implementation)
        with torch.no_grad():
            logits = model(
                **batch.model_inputs(torch.device("cpu"), torch.float32, attn),
                targets=batch.targets,
            )
        loss, _ = per_sample_loss(logits, batch.targets, batch.segments, batch.n_samples)
    except ValueError as e:
        return Finding("error", "vqa", f"{name}: {e}", "check the chat template and the data")
    answer_tokens = int((batch.targets != -100).sum())
    if not bool(torch.isfinite(loss).all()):
        return Finding(
            "error", "vqa", f"{name}: non-finite loss on a real packed batch", "run with -v"
        )
    dropped = (
        f"; quality filter dropped {counts.turns_dropped} turns of the rows read"
        if counts.turns_dropped
        else ""
    )
    return Finding(
        "ok",
        "vqa",
        f"{name}: {batch.n_samples} samples packed into {len(batch.rows)} row(s), "
        f"{answer_tokens} answer tokens supervised, finite losses (max {float(loss.max()):.3f})"
        f"{dropped}",
    )


KIND = VQAKind()


def _breakdowns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact match per reference answer, and per category where rows have one."""
    by_answer: dict[str, list[float]] = {}
    by_category: dict[str, list[float]] = {}
    for r in records:
        by_answer.setdefault(str(r["reference"]).strip().lower(), []).append(r["correct"])
        if r["category"] is not None:
            by_category.setdefault(str(r["category"]), []).append(r["correct"])
    out: dict[str, Any] = {
        "per_answer_exact_match": {a: sum(v) / len(v) for a, v in sorted(by_answer.items())}
    }
    if by_category:
        out["per_category_exact_match"] = {
            c: sum(v) / len(v) for c, v in sorted(by_category.items())
        }
    return out

"""The offline demo's benchmark data: easy-VQA (a real VQA benchmark that ships in a package) and
multiple-choice twins of the classification sets.

- ``easyvqa``: the ``easy-vqa`` package's 5,000 real 64x64 images (shapes in colours; 4,000 train,
  1,000 test) and its 48,248 questions with one-word answers (13 answers: yes/no, three shapes,
  eight colours). Each row's ``category`` is its question type (``yes/no``, ``shape``,
  ``color``), so results carry accuracy per type beside the total; its ``references`` are its
  answer ten times (VQA accuracy leaves each of ten annotators out in turn).
  - ``train.jsonl`` is balanced by question type: every shape and color question, and a seeded
    sample of as many yes/no questions as the two together have on average (the package's train
    split is 74 % yes/no, so a short run would learn little else). ``train_all.jsonl`` has all
    38,575.
  - ``test.jsonl`` holds ``TEST_PER_TYPE`` test questions of each type (seeded): a CPU eval pass
    stays short and each type's accuracy is measured on as many. ``test_all.jsonl`` has all 9,673.
- ``mcq_digits``, ``mcq_textures``, ``mcq_faces``: the same images as the classification sets,
  asked as multiple-choice questions with every class as an option, in class order ("which digit
  is this ?" A. zero B. one ... J. nine; chance 0.1, faces A. no B. yes, chance 0.5), the prompt
  and scoring of lmms-eval's MMBench task. The options keep their order because the tiny model
  (2 layers) does not learn, in a demo's few hundred steps, to find the option that names what
  it sees among options drawn anew per row; ``category`` is the true class.

Built beside the classification sets (``orch data demo``), image paths relative to the demo
folder, each folder written to a temporary name and renamed into place with a COMPLETE marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.contract.errors import DataError

logger = logging.getLogger(__name__)

TEST_PER_TYPE = 200
"""Questions of each type in easyvqa/test.jsonl (a seeded sample of the 9,673 test questions)."""
SHAPES = frozenset({"circle", "rectangle", "triangle"})
TYPES = ("yes/no", "shape", "color")
MCQ_QUESTIONS = {
    "digits": "which digit is this ?",
    "textures": "which picture is this ?",
    "faces": "is this a face ?",
}


def question_type(answer: str) -> str:
    """easy-VQA's question types, read from the answer: yes/no, shape or color."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in SHAPES else "color"


def easy_vqa_root() -> Path:
    """The ``easy_vqa`` package's data folder (images and questions)."""
    try:
        import easy_vqa
    except ImportError as e:
        raise DataError(
            "the easy-vqa package is not installed (the demo's VQA images and questions); "
            "`make setup` installs it (requirements/stack.txt)"
        ) from e
    return Path(easy_vqa.__file__).parent / "data"


def build_demo_bench(out_dir: Path, *, seed: int = 0, force: bool = False) -> None:
    """``easyvqa/`` and ``mcq_{digits,textures,faces}/`` in ``out_dir`` (the classification sets
    must be built there first)."""
    _build(out_dir / "easyvqa", force, lambda tmp: _easy_vqa(tmp, seed))
    for name in MCQ_QUESTIONS:
        _build(out_dir / f"mcq_{name}", force, lambda tmp, n=name: _mcq_twin(tmp, out_dir, n))


def _build(final: Path, force: bool, write: Any) -> None:
    if (final / "COMPLETE").is_file() and not force:
        return
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = write(tmp)
    (tmp / "COMPLETE").write_text(json.dumps(counts))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    logger.info("built %s: %s", final.name, ", ".join(f"{v} {k}" for k, v in counts.items()))


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _easy_vqa(tmp: Path, seed: int) -> dict[str, int]:
    src = easy_vqa_root()
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "test"):
        shutil.copytree(src / split / "images", tmp / "images" / split)
        questions = json.loads((src / split / "questions.json").read_text())
        rows[split] = [
            {
                "id": f"easyvqa/{split}/{i:05d}",
                "dataset_name": "easyvqa",
                # Relative to the demo folder, where this one is renamed to.
                "images": [f"easyvqa/images/{split}/{image_id}.png"],
                "texts": [{"user": text, "assistant": answer}],
                # The one generated answer stands for all ten annotators of VQA accuracy (as a
                # question every VQAv2 annotator answered alike): one reference would score 0.
                "references": [answer] * 10,
                "category": question_type(answer),
            }
            for i, (text, answer, image_id) in enumerate(questions)
        ]
    rng = np.random.default_rng(seed)
    by_type = {
        split: {t: [r for r in rows[split] if r["category"] == t] for t in TYPES} for split in rows
    }
    train = by_type["train"]
    n_yes_no = (len(train["shape"]) + len(train["color"])) // 2
    kept = {id(r) for t in ("shape", "color") for r in train[t]}
    kept |= {id(train["yes/no"][i]) for i in rng.choice(len(train["yes/no"]), n_yes_no, False)}
    test = by_type["test"]
    picked = {id(test[t][i]) for t in TYPES for i in rng.choice(len(test[t]), TEST_PER_TYPE, False)}
    return {
        "train": _write_jsonl(tmp / "train.jsonl", (r for r in rows["train"] if id(r) in kept)),
        "train_all": _write_jsonl(tmp / "train_all.jsonl", rows["train"]),
        "test": _write_jsonl(tmp / "test.jsonl", (r for r in rows["test"] if id(r) in picked)),
        "test_all": _write_jsonl(tmp / "test_all.jsonl", rows["test"]),
    }


def _mcq_twin(tmp: Path, out_dir: Path, name: str) -> dict[str, int]:
    from workers.data.demo import VQA_ANSWERS

    # Class names as the tiny model's vocabulary has them (chelsea is a cat), as the VQA twins.
    labels = [
        VQA_ANSWERS.get(x, x) for x in json.loads((out_dir / name / "labels.json").read_text())
    ]
    counts = {}
    for split in ("train", "test"):
        out = []
        for line in (out_dir / name / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            true = labels[row["label"]]
            out.append(
                {
                    "id": f"mcq_{row['id']}",
                    "dataset_name": f"mcq_{name}",
                    "images": [str(Path(row["image_path"]).relative_to(out_dir))],
                    "question": MCQ_QUESTIONS[name],
                    "hint": None,
                    "options": labels,
                    "answer": "ABCDEFGHIJ"[row["label"]],
                    "category": true,
                }
            )
        counts[split] = _write_jsonl(tmp / f"{split}.jsonl", out)
    return counts

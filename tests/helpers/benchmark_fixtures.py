"""Small copies of the ten lmms-eval benchmarks, with their Hugging Face schemas (column names and
Arrow types as the dataset cards and lmms-eval's tasks read them), written as Parquet files or as
``datasets`` ``save_to_disk`` folders (Arrow IPC stream files plus the json files), for
`orch data prepare <benchmark>` tests. Images are HF Image structs ``{bytes, path}`` of real PNG
(or JPEG) bytes.

Each ``<benchmark>_rows()`` returns plain dicts a test may edit before ``table(...)`` turns them
into a ``pyarrow.Table`` with the benchmark's schema.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
STRINGS = pa.list_(pa.string())


def image_bytes(shade: int, fmt: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 7)).save(buf, format=fmt)
    return buf.getvalue()


def image(shade: int, fmt: str = "PNG") -> dict[str, Any]:
    """An HF Image value: the bytes and the file name it had."""
    return {"bytes": image_bytes(shade, fmt), "path": f"{shade}.{fmt.lower()}"}


def table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(t: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    return path


def _features(schema: pa.Schema) -> dict[str, Any]:
    """dataset_info.json ``features``: enough of datasets' own description for a reader."""

    def feature(t: pa.DataType) -> Any:
        if t == IMAGE:
            return {"_type": "Image"}
        if pa.types.is_list(t):
            return {"feature": feature(t.value_type), "_type": "Sequence"}
        if pa.types.is_struct(t):
            return {f.name: feature(f.type) for f in t}
        return {"dtype": str(t).replace("large_", ""), "_type": "Value"}

    return {f.name: feature(f.type) for f in schema}


def write_save_to_disk(t: pa.Table, folder: Path, split: str) -> Path:
    """What ``Dataset.save_to_disk`` writes for one split."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t, max_chunksize=2)  # several record batches, as datasets writes them
    (folder / "dataset_info.json").write_text(
        json.dumps({"features": _features(t.schema), "splits": {split: {"name": split}}})
    )
    state: dict[str, Any] = {
        "_data_files": [{"filename": name}],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def write_dataset_dict(tables: dict[str, pa.Table], folder: Path) -> Path:
    """What ``DatasetDict.save_to_disk`` writes: one save_to_disk folder per split."""
    for split, t in tables.items():
        write_save_to_disk(t, folder / split, split)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(tables)}))
    return folder


# --------------------------------------------------------------------------- MMBench

MMBENCH = pa.schema(
    [
        ("index", pa.int64()),
        ("question", pa.string()),
        ("hint", pa.string()),
        ("answer", pa.string()),
        ("A", pa.string()),
        ("B", pa.string()),
        ("C", pa.string()),
        ("D", pa.string()),
        ("category", pa.string()),
        ("image", IMAGE),
        ("source", pa.string()),
        ("L2-category", pa.string()),
        ("comment", pa.string()),
        ("split", pa.string()),
    ]
)


def mmbench_rows() -> list[dict[str, Any]]:
    """Two questions and their circular copies (options rotated, index + k * 1_000_000), one
    with only two options ("nan" and None beyond), one with an empty middle option."""

    def row(index: int, options: list[str | None], answer: str, **kw: Any) -> dict[str, Any]:
        a, b, c, d = options
        base = index % 1_000_000
        return {
            "index": index, "question": f"What is shown? ({base})", "hint": kw.get("hint"),
            "answer": answer, "A": a, "B": b, "C": c, "D": d,
            "category": kw.get("category", "object_localization"), "image": image(10 + base),
            "source": "MMBench", "L2-category": "finegrained_perception (instance-level)",
            "comment": None, "split": "dev",
        }  # fmt: skip

    return [
        row(0, ["cat", "dog", "bird", "fish"], "B", hint="A pet."),
        row(1_000_000, ["dog", "bird", "fish", "cat"], "A", hint="A pet."),
        row(2_000_000, ["bird", "fish", "cat", "dog"], "D", hint="A pet."),
        row(1, ["yes", "no", "nan", None], "A", hint="nan", category="image_emotion"),
        row(1_000_001, ["no", "yes", "nan", None], "B", hint="nan", category="image_emotion"),
        row(2, ["red", "nan", "green", "blue"], "D", category="color"),
    ]


# --------------------------------------------------------------------------- MMMU

MMMU = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.string()),
        ("explanation", pa.string()),
        *[(f"image_{k}", IMAGE) for k in range(1, 8)],
        ("img_type", pa.string()),
        ("answer", pa.string()),
        ("topic_difficulty", pa.string()),
        ("question_type", pa.string()),
        ("subfield", pa.string()),
    ]
)


def mmmu_row(
    rid: str, question: str, options: str, answer: str, n_images: int, kind: str
) -> dict[str, Any]:
    shade = zlib.crc32(rid.encode()) % 40 * 5  # distinct images for the fixtures' ids
    images = {f"image_{k}": image(shade + k) if k <= n_images else None for k in range(1, 8)}
    return {
        "id": rid, "question": question, "options": options, "explanation": "", **images,
        "img_type": "['Diagrams']", "answer": answer, "topic_difficulty": "Medium",
        "question_type": kind, "subfield": "Financial Accounting",
    }  # fmt: skip


def mmmu_subjects() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """subject -> split -> rows, as MMMU/MMMU has them (one folder per subject)."""
    return {
        "Accounting": {
            "validation": [
                mmmu_row(
                    "validation_Accounting_1",
                    "<image 1> What is the overhead cost per unit?",
                    "['$6', '$7', '$8', '$9']",
                    "B",
                    1,
                    "multiple-choice",
                ),
                mmmu_row(
                    "validation_Accounting_2",
                    "Which graph shows the break-even point?",
                    "['<image 1>', '<image 2>', '<image 3>']",
                    "C",
                    3,
                    "multiple-choice",
                ),
            ],
            "dev": [
                mmmu_row(
                    "dev_Accounting_1",
                    "<image 1> A dev question?",
                    "['a', 'b']",
                    "A",
                    1,
                    "multiple-choice",
                )
            ],
        },
        "Art_Theory": {
            "validation": [
                mmmu_row(
                    "validation_Art_Theory_1",
                    "Compare <image 2> with <image 1>. In which century was the first painted?",
                    "[]",
                    "18th",
                    2,
                    "open",
                ),
                mmmu_row(
                    "validation_Art_Theory_2",
                    "Who painted <image 1>?",
                    '["Monet", "Manet", "Degas", "Renoir", "Sisley"]',
                    "a",
                    2,  # image_2 is set but no marker refers to it: not used
                    "multiple-choice",
                ),
            ]
        },
    }


def write_mmmu(folder: Path, subjects: dict[str, dict[str, list[dict[str, Any]]]]) -> Path:
    for subject, splits in subjects.items():
        for split, rows in splits.items():
            write_parquet(table(rows, MMMU), folder / subject / f"{split}-00000-of-00001.parquet")
    return folder


# --------------------------------------------------------------------------- MMStar

MMSTAR = pa.schema(
    [
        ("index", pa.int64()),
        ("question", pa.string()),
        ("image", IMAGE),
        ("answer", pa.string()),
        ("category", pa.string()),
        ("l2_category", pa.string()),
        (
            "meta_info",
            pa.struct(
                [("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())]
            ),
        ),
    ]
)


def mmstar_rows() -> list[dict[str, Any]]:
    def row(index: int, question: str, answer: str, category: str) -> dict[str, Any]:
        meta = {"source": "SEEDBench", "split": "val", "image_path": f"images/{index}.jpg"}
        return {
            "index": index, "question": question, "image": image(100 + index),
            "answer": answer, "category": category, "l2_category": "localization",
            "meta_info": meta,
        }  # fmt: skip

    return [
        row(
            0,
            "Which option describe the object relationship in the image correctly?\nOptions: "
            "A: The suitcase is on the book., B: The suitcase is beneath the cat., C: The "
            "suitcase is beneath the bed., D: The suitcase is beneath the book.",
            "A",
            "coarse perception",
        ),
        row(
            1,
            "Hint: Please answer the question and provide the correct option letter.\nQuestion: "
            "What is the ratio of red to blue?\nOptions: A: 3:4, B: 1:2, C: 2, 3 and 4",
            "C",
            "math",
        ),
        row(2, "How many birds are there?\nOptions: A: 1, B: 2, C: 3, D: 4", "D", "math"),
    ]


# --------------------------------------------------------------------------- ScienceQA

SCIENCEQA = pa.schema(
    [
        ("image", IMAGE),
        ("question", pa.string()),
        ("choices", STRINGS),
        ("answer", pa.int8()),
        ("hint", pa.string()),
        ("task", pa.string()),
        ("grade", pa.string()),
        ("subject", pa.string()),
        ("topic", pa.string()),
        ("category", pa.string()),
        ("skill", pa.string()),
        ("lecture", pa.string()),
        ("solution", pa.string()),
    ]
)


def scienceqa_rows(split: str = "test") -> list[dict[str, Any]]:
    def row(i: int, choices: list[str], answer: int, hint: str, img: bool) -> dict[str, Any]:
        subject = ["natural science", "social science", "language science"][i % 3]
        return {
            "image": image(150 + i) if img else None, "question": f"Question {i} ({split})?",
            "choices": choices, "answer": answer, "hint": hint, "task": "closed choice",
            "grade": "grade2", "subject": subject, "topic": "geography",
            "category": "Geography", "skill": "Read a map", "lecture": "", "solution": "",
        }  # fmt: skip

    return [
        row(0, ["Oregon", "Nevada", "Ohio"], 2, "", True),
        row(1, ["yes", "no"], 0, "Figure: a map.", True),
        row(2, ["1", "2", "3", "4", "5"], 4, "", False),
    ]


# --------------------------------------------------------------------------- TextVQA

TEXTVQA = pa.schema(
    [
        ("image_id", pa.string()),
        ("question_id", pa.int64()),
        ("question", pa.string()),
        ("question_tokens", STRINGS),
        ("image", IMAGE),
        ("image_width", pa.int64()),
        ("image_height", pa.int64()),
        ("flickr_original_url", pa.string()),
        ("flickr_300k_url", pa.string()),
        ("answers", STRINGS),
        ("image_classes", STRINGS),
        ("set_name", pa.string()),
        ("ocr_tokens", STRINGS),
    ]
)


def textvqa_rows() -> list[dict[str, Any]]:
    shades = {"003a8ae2ef43b901": 201, "00685bc495504d61": 202}

    def row(qid: int, image_id: str, question: str, answers: list[str]) -> dict[str, Any]:
        return {
            "image_id": image_id, "question_id": qid, "question": question,
            "question_tokens": question.split(), "image": image(shades[image_id]),
            "image_width": 8, "image_height": 6, "flickr_original_url": "", "flickr_300k_url": "",
            "answers": answers, "image_classes": ["Sign"], "set_name": "val",
            "ocr_tokens": ["STOP"],
        }  # fmt: skip

    return [
        row(34602, "003a8ae2ef43b901", "what is the brand of this camera?",
            ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota",
             "dakota", "dakota digital", "dakota digital", "dakota", "dakota"]),
        row(34603, "003a8ae2ef43b901", "What does the small white text say?",
             ["copenhagen", "copenhagen", "copenhagen", "copenhagen", "copenhagen", "thursday",
              "copenhagen", "copenhagen", "copenhagen", "copenhagen"]),
        row(34604, "00685bc495504d61", "what number is on the player's jersey?",
            ["22"] * 10),
    ]  # fmt: skip


# --------------------------------------------------------------------------- DocVQA, InfoVQA

DOCVQA = pa.schema(
    [
        ("questionId", pa.string()),
        ("question", pa.string()),
        ("question_types", STRINGS),
        ("image", IMAGE),
        ("docId", pa.int64()),
        ("ucsf_document_id", pa.string()),
        ("ucsf_document_page_no", pa.string()),
        ("answers", STRINGS),
        ("data_split", pa.string()),
    ]
)


def docvqa_rows() -> list[dict[str, Any]]:
    def row(qid: str, question: str, answers: list[str], doc: int) -> dict[str, Any]:
        return {
            "questionId": qid, "question": question, "question_types": ["layout"],
            "image": image(doc * 10, "JPEG"), "docId": doc, "ucsf_document_id": f"nkbl{doc}",
            "ucsf_document_page_no": "1", "answers": answers, "data_split": "val",
        }  # fmt: skip

    return [
        row("49153", "What is the ‘actual’ value per 1000, during the year 1975?", ["0.28"], 14),
        row("24580", "What is name of university?", ["university of california",
            "University of California", "university of california"], 15),
        row("57349", "What is the date?", ["May 7, 1980"], 16),
    ]  # fmt: skip


INFOVQA = pa.schema(
    [
        ("questionId", pa.string()),
        ("question", pa.string()),
        ("answers", STRINGS),
        ("answer_type", STRINGS),
        ("image", IMAGE),
        ("image_url", pa.string()),
        ("operation/reasoning", STRINGS),
        ("ocr", pa.string()),
        ("data_split", pa.string()),
    ]
)


def infovqa_rows() -> list[dict[str, Any]]:
    def row(qid: str, question: str, answers: list[str]) -> dict[str, Any]:
        return {
            "questionId": qid, "question": question, "answers": answers,
            "answer_type": ["single span"], "image": image(60 + int(qid) % 90),
            "image_url": "https://example.invalid/i.jpeg", "operation/reasoning": [],
            "ocr": "{}", "data_split": "val",
        }  # fmt: skip

    return [
        row("98313", "Which social platform has heavy female audience?", ["pinterest"]),
        row("98309", "What percentage of people are using Facebook?", ["72%", "72"]),
        row("98317", "How many icons are shown?", ["4", "four"]),
    ]


# --------------------------------------------------------------------------- ChartQA

CHARTQA = pa.schema(
    [("type", pa.string()), ("question", pa.string()), ("answer", pa.string()), ("image", IMAGE)]
)


def chartqa_rows() -> list[dict[str, Any]]:
    """The third row's image has no bytes, only a path relative to the Parquet file (the
    test writes that file)."""
    return [
        {"type": "human_test", "question": "How many food items are shown?", "answer": "14",
         "image": image(30)},
        {"type": "augmented_test", "question": "What is the value of Japan?", "answer": "42.5",
         "image": image(31)},
        {"type": "augmented_test", "question": "Which year has the highest value?",
         "answer": "2019", "image": {"bytes": None, "path": "charts/2019.png"}},
    ]  # fmt: skip


# --------------------------------------------------------------------------- OCRBench

OCRBENCH = pa.schema(
    [
        ("dataset", pa.string()),
        ("question", pa.string()),
        ("question_type", pa.string()),
        ("answer", STRINGS),
        ("image", IMAGE),
    ]
)


def ocrbench_rows() -> list[dict[str, Any]]:
    return [
        {"dataset": "IIIT5K", "question": "what is written in the image? ",
         "question_type": "Regular Text Recognition", "answer": ["CENTRE"], "image": image(70)},
        {"dataset": "HME100k", "question": "Please write out the expression of the formula.",
         "question_type": "Handwritten Mathematical Expression Recognition",
         "answer": ["x ^ { 2 }", "x^{2}"], "image": image(71)},
        {"dataset": "docVQA", "question": "What is the title?", "question_type": "Doc-oriented VQA",
         "answer": ["Annual Report"], "image": image(72)},
    ]  # fmt: skip


# --------------------------------------------------------------------------- MME

MME = pa.schema(
    [
        ("question_id", pa.string()),
        ("image", IMAGE),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("category", pa.string()),
    ]
)


def mme_rows() -> list[dict[str, Any]]:
    """Two images, each with its Yes and its No question (as MME pairs them)."""

    def row(qid: str, shade: int, question: str, answer: str, category: str) -> dict[str, Any]:
        return {"question_id": qid, "image": image(shade), "question": question,
                "answer": answer, "category": category}  # fmt: skip

    return [
        row("code_reasoning/0020.png", 90, "Is a c++ code shown in the picture? "
            "Please answer yes or no.", "Yes", "code_reasoning"),
        row("code_reasoning/0020.png", 90, "Is a python code shown in the picture? "
            "Please answer yes or no.", "No", "code_reasoning"),
        row("existence/000000006040.jpg", 91, "Is there a train in this image? "
            "Please answer yes or no.", "Yes", "existence"),
        row("existence/000000006040.jpg", 91, "Is there a bed in this image? "
            "Please answer yes or no.", "No", "existence"),
    ]  # fmt: skip

"""Hooks of the test tasks (loaded by lmms-eval as ``!function orch_hooks.<name>``)."""

from typing import Any

from PIL import Image


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def vqa_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: Any = None) -> str:
    return f"{doc['question']}\nAnswer the question using a single word or phrase."


def mcq_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: Any = None) -> str:
    options = "\n".join(f"{'ABCDEFGHIJ'[i]}. {c}" for i, c in enumerate(doc["choices"]))
    return (
        f"{doc['question']}\n{options}\n"
        "Answer with the option's letter from the given choices directly."
    )


def crash_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: Any = None) -> str:
    raise ValueError(f"orch_crash: this task crashes on purpose (doc {doc['id']})")

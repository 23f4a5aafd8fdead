"""The document hooks of the local easy-VQA task (``!function easyvqa_hooks.doc_to_visual`` in
the task YAML that run_lmms.py writes): lmms-eval imports this module by name, from sys.path.

Rows: ``{"id", "question", "answer", "image"}`` with an absolute image path (the orch side
converts its easyvqa rows to this shape).
"""

from __future__ import annotations

from typing import Any

from PIL import Image


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The row's image, decoded as RGB (what lmms-eval's image tasks hand the model)."""
    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def doc_to_text(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    """The question as it stands: orch's VQA prompt has no pre- or post-prompt either."""
    return str(doc["question"])

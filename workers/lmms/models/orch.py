"""orch's model class for lmms-eval (``evaluation.lmms.model = "orch"``): a checkpoint's ``hf/``
directory loaded the way orch's own eval loads it (``workers.models.classifier``), prompts made
by orch's VQA encoder (the checkpoint's chat template and image processor, no torchvision), and
greedy answers from ``workers.evaluate.generate_answers``. Runs in the lmms-eval environment.

Model arguments (``evaluation.lmms.model_args``): ``max_side`` (pixels of an image's long side,
default 448, as orch's VQA datasets), ``max_new_tokens`` (the cap when a task sets none, 32),
``attn_implementation`` (default "auto"). Device and dtype come from the part's resources.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image

from workers.data.vqa import Turn, VQAEncoder, VQASample, dynamic_resize

logger = logging.getLogger("orch.lmms.model")


class OrchLmms(lmms):
    is_simple = True  # lmms-eval's "simple" protocol: doc_to_visual + a text context

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | str = 1,
        max_side: int = 448,
        max_new_tokens: int = 32,
        attn_implementation: str = "auto",
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"orch's lmms-eval model takes no argument(s) {sorted(unknown)} (evaluation.lmms."
                "model_args); it takes max_side, max_new_tokens, attn_implementation"
            )
        from workers.evaluate import DTYPES
        from workers.models.classifier import META_FILE, load_backbone, load_classifier

        path = Path(pretrained)
        self._device = torch.device(device)
        torch_dtype = DTYPES[dtype]
        model: torch.nn.Module
        if (path / META_FILE).is_file():  # an orch checkpoint
            model = load_classifier(path, attn_implementation, torch_dtype)
        else:  # a plain HF directory (a base model)
            model = _Backbone(load_backbone(path, attn_implementation, torch_dtype))
        self._model = model.to(self._device, torch_dtype).eval()
        self.encoder = VQAEncoder(path)
        self.max_side = int(max_side)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size)
        logger.info("orch model %s on %s (%s)", path, self._device, torch_dtype)

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    def clean(self) -> None:
        """lmms-eval calls this after each ``simple_evaluate`` to drop the model; orch evaluates
        a checkpoint's tasks one after another on one load, and the process ends after them."""

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "orch's lmms-eval model answers generate_until tasks only; for a loglikelihood "
            "(multiple_choice) task set evaluation.lmms.model to an lmms-eval model class "
            "(e.g. qwen2_5_vl)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("orch's lmms-eval model has no multi-round generation")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from workers.evaluate import generate_answers

        answers: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = [r.args for r in requests[start : start + self.batch_size]]
            # One generate call per distinct generation setting (a chunk normally has one).
            by_kwargs: dict[str, list[int]] = {}
            for i, (_, kwargs, *_rest) in enumerate(chunk):
                by_kwargs.setdefault(repr(sorted(kwargs.items())), []).append(i)
            out: dict[int, str] = {}
            for indices in by_kwargs.values():
                kwargs = chunk[indices[0]][1]
                max_new, until = self._generation(kwargs)
                prompts = [self._prompt(*chunk[i]) for i in indices]
                texts = generate_answers(self._model, self.encoder, prompts, max_new, self.device)
                for i, text in zip(indices, texts, strict=True):
                    for stop in until:
                        text = text.split(stop)[0]
                    out[i] = text
            answers.extend(out[i] for i in range(len(chunk)))
        return answers

    def _generation(self, kwargs: dict[str, Any]) -> tuple[int, list[str]]:
        """(max_new_tokens, stop strings) of a task's generation_kwargs: greedy only."""
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
            raise ValueError(
                f"orch's lmms-eval model decodes greedily; the task asks for sampling ({kwargs})"
            )
        if int(kwargs.get("num_beams") or 1) != 1:
            raise ValueError(f"orch's lmms-eval model does no beam search ({kwargs})")
        until = kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        return int(kwargs.get("max_new_tokens") or self.max_new_tokens), [u for u in until if u]

    def _prompt(
        self, context: str, _kwargs: Any, doc_to_visual: Any, doc_id: int, task: str, split: str
    ) -> Any:
        doc = self.task_dict[task][split][doc_id]
        visuals = [v for v in (doc_to_visual(doc) or []) if v is not None]
        images: list[Image.Image] = []
        for v in visuals:
            if not isinstance(v, Image.Image):
                raise ValueError(
                    f"{task} doc {doc_id}: doc_to_visual gave a {type(v).__name__}; orch's "
                    "lmms-eval model takes images (PIL) only"
                )
            images.append(dynamic_resize(v.convert("RGB"), self.max_side, self.encoder.multiple))
        text = context.replace("<image>", "").strip()
        sample = VQASample(str(doc_id), task, (), (Turn(user=text, assistant=""),))
        return self.encoder.encode_prompt_decoded(sample, images)


class _Backbone(torch.nn.Module):
    """A plain VLM in the shape ``generate_answers`` takes (``.vlm``)."""

    def __init__(self, vlm: torch.nn.Module) -> None:
        super().__init__()
        self.vlm = vlm

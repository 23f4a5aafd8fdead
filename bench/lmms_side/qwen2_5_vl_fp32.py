"""lmms-eval's own ``qwen2_5_vl`` model class (lmms_eval/models/simple/qwen2_5_vl.py, 0.7.3),
single process, with three changes and nothing else:

- the model loads in fp32 (the built-in hard-codes bf16), on ``device_map`` (cpu here);
- the processor is the tokenizer plus ``Qwen2VLImageProcessorPil`` (transformers'
  ``AutoProcessor`` and ``qwen_vl_utils`` import torchvision, whose CUDA build does not load
  beside torch 2.13.0+cpu in this venv; see /work/shared/STACK.md): ``_fetch_image`` is
  qwen_vl_utils' ``fetch_image`` for a data URL and ``_processor_inputs`` is what
  ``Qwen2_5_VLProcessor.__call__`` does for text and images (image tokens expanded,
  ``mm_token_type_ids`` returned);
- a system prompt of ``""`` sends none (the built-in always sends one), and it counts where the
  time goes (``stats``): generate_until, model.generate, new and prompt tokens; no progress
  bar.

Everything else follows the built-in: requests sorted by context length and batched by
``batch_size``, ``doc_to_visual`` per document, each image JPEG-encoded to a data URL (quality
85) and decoded and resized again, left padding for batches, the same ``generate`` arguments,
the answers cut at ``until``. Video inputs are not supported (the task has none).
"""

from __future__ import annotations

import base64
import copy
import math
import time
from io import BytesIO
from typing import Any

import torch
from lmms_eval import utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.media_encoder import encode_image_to_data_url
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

IMAGE_PAD = "<|image_pad|>"
MAX_RATIO = 200  # qwen_vl_utils.vision_process.MAX_RATIO


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """qwen_vl_utils.vision_process.smart_resize (0.0.14)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class Qwen2_5_VLFp32(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        device_map: str = "cpu",
        batch_size: int = 1,
        use_cache: bool = True,
        attn_implementation: str | None = "sdpa",
        min_pixels: int = 256 * 28 * 28,
        max_pixels: int = 1605632,
        system_prompt: str = "You are a helpful assistant.",
    ) -> None:
        super().__init__()
        self._device = torch.device(device)
        self.device_map = device_map
        kwargs: dict[str, Any] = {"dtype": torch.float32, "device_map": device_map}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        self._model = AutoModelForImageTextToText.from_pretrained(pretrained, **kwargs).eval()
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(
            pretrained, min_pixels=min_pixels, max_pixels=max_pixels
        )
        self._tokenizer = AutoTokenizer.from_pretrained(pretrained)
        token = self._tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if not isinstance(token, int):
            raise ValueError(f"{pretrained}: the tokenizer has no {IMAGE_PAD} token")
        self.image_token_id = token
        self.system_prompt = system_prompt
        self._config = self._model.config
        self._max_length = 2048
        self.batch_size_per_gpu = int(batch_size)
        self.use_cache = use_cache
        self.stats = self.empty_stats()

    @staticmethod
    def empty_stats() -> dict[str, float]:
        return {
            "generate_until_s": 0.0,
            "generate_s": 0.0,
            "generate_calls": 0,
            "samples": 0,
            "new_tokens": 0,
            "prompt_tokens": 0,
        }

    @property
    def config(self) -> Any:
        return self._config

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def model(self) -> Any:
        return self._model

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("Loglikelihood is not implemented for Qwen2.5_VL")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("multi-round generation is not needed by this benchmark")

    def _encode_image_data_url(self, image: Image.Image) -> str:
        return str(
            encode_image_to_data_url(
                image, image_format="JPEG", mime_type="image/jpeg", convert_rgb=True, quality=85
            )
        )

    def _fetch_image(self, url: str) -> Image.Image:
        """qwen_vl_utils.fetch_image for a base64 data URL, with the element's min/max pixels."""
        _, data = url.split("base64,", 1)
        with BytesIO(base64.b64decode(data)) as bio:
            image: Image.Image = copy.deepcopy(Image.open(bio))
        if image.mode == "RGBA":
            rgb = Image.new("RGB", image.size, (255, 255, 255))
            rgb.paste(image, mask=image.split()[3])
            image = rgb
        else:
            image = image.convert("RGB")
        factor = int(self.image_processor.patch_size) * int(self.image_processor.merge_size)
        width, height = image.size
        h, w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return image.resize((w, h))

    def _processor_inputs(
        self, texts: list[str], images: list[Image.Image], padding_side: str
    ) -> dict[str, torch.Tensor]:
        """Qwen2_5_VLProcessor(text=texts, images=images, padding=True, return_tensors="pt")."""
        out: dict[str, torch.Tensor] = {}
        if images:
            vision = self.image_processor(images=images, return_tensors="pt")
            out["pixel_values"] = vision["pixel_values"]
            out["image_grid_thw"] = vision["image_grid_thw"]
            merge = int(self.image_processor.merge_size) ** 2
            counts = iter(int(g.prod()) // merge for g in vision["image_grid_thw"])
            expanded = []
            for text in texts:
                while IMAGE_PAD in text:
                    text = text.replace(IMAGE_PAD, "<|placeholder|>" * next(counts), 1)
                expanded.append(text.replace("<|placeholder|>", IMAGE_PAD))
            texts = expanded
        enc = self.tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
        out["input_ids"] = enc["input_ids"]
        out["attention_mask"] = enc["attention_mask"]
        out["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).long()
        return out

    def generate_until(self, requests: list[Instance]) -> list[str]:
        t_start = time.perf_counter()
        res: list[str] = []

        def _collate(x: tuple[Any, ...]) -> tuple[int, str]:
            toks = self.tokenizer.encode(x[0])
            return -len(toks), x[0]

        re_ords = utils.Collator([reg.args for reg in requests], _collate, grouping=True)
        chunks = re_ords.get_batched(n=self.batch_size, batch_fn=None)
        for chunk in chunks:
            raw_contexts, all_gen_kwargs, doc_to_visual, doc_id, task, split = zip(
                *chunk, strict=True
            )
            task, split = task[0], split[0]
            visual_list = [doc_to_visual[0](self.task_dict[task][split][ids]) for ids in doc_id]
            gen_kwargs = all_gen_kwargs[0]
            until = gen_kwargs.get("until", [self.tokenizer.decode(self.eot_token_id)])
            if isinstance(until, str):
                until = [until]
            until = [item for item in until if item != "\n\n"]
            contexts = [c.replace("<image>", "") for c in raw_contexts]

            batched_messages = []
            for i, context in enumerate(contexts):
                message: list[dict[str, Any]] = []
                if self.system_prompt:
                    message.append({"role": "system", "content": self.system_prompt})
                processed_visuals = [
                    {
                        "type": "image",
                        "image": self._encode_image_data_url(visual),
                        "max_pixels": self.max_pixels,
                        "min_pixels": self.min_pixels,
                    }
                    for visual in (visual_list[i] or [])
                    if isinstance(visual, Image.Image)
                ]
                message.append(
                    {
                        "role": "user",
                        "content": [*processed_visuals, {"type": "text", "text": context}],
                    }
                )
                batched_messages.append(message)

            texts = [
                str(
                    self.tokenizer.apply_chat_template(
                        m, tokenize=False, add_generation_prompt=True
                    )
                )
                for m in batched_messages
            ]
            image_inputs = [
                self._fetch_image(part["image"])
                for m in batched_messages
                for turn in m
                if isinstance(turn["content"], list)
                for part in turn["content"]
                if part["type"] == "image"
            ]
            padding_side = "left" if self.batch_size > 1 else "right"
            inputs = {
                k: v.to(self.device)
                for k, v in self._processor_inputs(texts, image_inputs, padding_side).items()
            }

            current: dict[str, Any] = {
                "max_new_tokens": 32768,
                "temperature": 0.0,
                "top_p": None,
                "num_beams": 1,
            }
            current.update(gen_kwargs)
            if current["temperature"] > 0:
                current["do_sample"] = True
            else:
                current["do_sample"] = False
                current["temperature"] = None
                current["top_p"] = None

            t0 = time.perf_counter()
            cont = self.model.generate(
                **inputs,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                do_sample=current["do_sample"],
                temperature=current["temperature"],
                top_p=current["top_p"],
                num_beams=current["num_beams"],
                max_new_tokens=current["max_new_tokens"],
                use_cache=self.use_cache,
            )
            self.stats["generate_s"] += time.perf_counter() - t0
            self.stats["generate_calls"] += 1
            width = inputs["input_ids"].shape[1]
            self.stats["samples"] += len(contexts)
            self.stats["new_tokens"] += (cont.shape[1] - width) * len(contexts)
            self.stats["prompt_tokens"] += int(inputs["attention_mask"].sum())

            trimmed = [out[len(ids) :] for ids, out in zip(inputs["input_ids"], cont, strict=True)]
            answers = self.tokenizer.batch_decode(
                trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            for ans, context in zip(answers, contexts, strict=True):
                for term in until:
                    if len(term) > 0:
                        ans = ans.split(term)[0]
                res.append(ans)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), ans)
        res = re_ords.get_original(res)
        self.stats["generate_until_s"] += time.perf_counter() - t_start
        return res

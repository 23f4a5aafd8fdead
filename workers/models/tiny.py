"""A tiny, real Qwen2.5-VL, built offline from a config and saved with ``save_pretrained``.

It is the same architecture as Qwen2.5-VL-7B (vision tower with window attention, patch merger,
Qwen2 language model with 3-D mRoPE), only narrow and shallow, so the code that loads it is the
code that loads a 7B directory. The tokenizer is a WordLevel vocabulary with Qwen's special tokens,
built with the ``tokenizers`` library: nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# A small English vocabulary: prompts, digit and texture names, chat roles, easy-vqa's questions
# and answers, the option letters and lmms-eval's multiple-choice instructions. Unknown words map
# to [UNK]; the classifier only needs the image tokens and a fixed prompt. Words are only ever
# appended, so the ids of the earlier ones stay put.
WORDS = (  # noqa: SIM905  (a sentence of words reads better than a list literal)
    "[UNK] what is in the image ? this a an of which class digit texture face not "
    "zero one two three four five six seven eight nine yes no user assistant system "
    "you are helpful picture photo shows answer with word number . , : "
    "astronaut brick camera cat clock coffee coins colorwheel grass gravel horse hubble "
    "cells retina rocket text moon page immunohistochemistry microaneurysms "
    "A B C D E F G H I J ' s option letter from the given choices directly there several options "
    "shape color contain does present circle rectangle triangle "
    "red green blue gray teal black yellow brown"
).split()

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(out_dir: Path) -> dict[str, int]:
    """Write an offline tokenizer to ``out_dir``; return the ids of the special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    # Words, then punctuation split off them: "A." is "A" ".", "shape?" is "shape" "?".
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return {tok: vocab[tok] for tok in SPECIAL_TOKENS} | {"vocab_size": len(vocab)}


FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")


def build_tiny(
    out_dir: Path, family: str = "qwen2.5-vl", *, seed: int = 0, hidden: int = 64
) -> Path:
    """Write a randomly initialised tiny model of a Qwen-VL family (model, tokenizer, image
    processor): the family's real architecture (Qwen2-VL's vision tower, Qwen2.5-VL's window
    attention, Qwen3-VL's deepstack and interleaved mRoPE), only narrow and shallow."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(out_dir)
    patch = 16 if family == "qwen3-vl" else 14
    config = tiny_config(family, ids, hidden, patch)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.save_pretrained(out_dir)
    side = 4 * patch  # 4x4 patches, 2x2 tokens after merging
    Qwen2VLImageProcessorPil(
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=side * side,
        max_pixels=side * side,
    ).save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "orch_model.json").write_text(
        json.dumps({"kind": f"tiny-{family}", "seed": seed, "parameters": n_params}, indent=2)
    )
    logger.info("wrote tiny %s (%d parameters) to %s", family, n_params, out_dir)
    return out_dir


def _family(
    family: str, hidden: int, heads: int
) -> tuple[Any, dict[str, object], dict[str, object]]:
    """The family's config class and what its vision (and text) config adds."""
    if family == "qwen2-vl":
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig, {"embed_dim": 32, "mlp_ratio": 2, "hidden_size": hidden}, {}
    if family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig

        window = {"window_size": 56, "fullatt_block_indexes": [1]}
        return Qwen2_5_VLConfig, {"intermediate_size": 64, "out_hidden_size": hidden, **window}, {}
    from transformers import Qwen3VLConfig

    vision = {"intermediate_size": 64, "out_hidden_size": hidden, "num_position_embeddings": 64}
    return Qwen3VLConfig, vision | {"deepstack_visual_indexes": [0]}, {"head_dim": hidden // heads}


def tiny_config(family: str, ids: dict[str, int], hidden: int, patch: int) -> Any:
    """The family's config class with 2 text layers of ``hidden`` and a 2-block vision tower."""
    heads = 4
    rope: dict[str, object] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        # mrope_section splits head_dim/2 rotary frequencies over (t, h, w).
        "mrope_section": _mrope_section(hidden // heads),
    }
    if family == "qwen3-vl":
        rope["mrope_interleaved"] = True
    text: dict[str, object] = {
        "vocab_size": ids["vocab_size"],
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_parameters": rope,
        "tie_word_embeddings": True,
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": None,
    }
    vision: dict[str, object] = {
        "depth": 2,
        "hidden_size": 32,
        "num_heads": 2,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    Config, vision_extra, text_extra = _family(family, hidden, heads)
    vision |= vision_extra
    text |= text_extra
    return Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_qwen2_5_vl(out_dir: Path, *, seed: int = 0, hidden: int = 64) -> Path:
    """The default tiny model: Qwen2.5-VL."""
    return build_tiny(out_dir, "qwen2.5-vl", seed=seed, hidden=hidden)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (temporal, height, width) like Qwen's 16/24/24."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]

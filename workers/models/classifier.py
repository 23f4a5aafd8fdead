"""A classifier over a Qwen-VL backbone: pooled hidden state -> one shared head.

Datasets of the mix have different class counts but share one head of width num_labels (the
largest count). Each row's logits past its dataset's num_classes are masked with the dtype's
finite minimum, never -inf: -inf turns into NaN as soon as a row is fully masked or a label
points at a masked class, and a NaN poisons every gradient of the step. A label outside its
dataset's classes is a data error and raises, naming the rows; it is never clamped.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

HEAD_FILE = "classifier_head.pt"
META_FILE = "orch_classifier.json"
# Files that make an hf/ directory self-contained (tokenizer and image processor).
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "vocab.json",
    "merges.txt",
)


class LabelOutOfRangeError(ValueError):
    """A label is not in [0, num_classes) of its dataset (it would be masked out)."""


def select_attn_implementation(requested: str) -> str:
    """Resolve ``auto`` to flash_attention_2, else sdpa, else eager; log the choice."""
    if requested != "auto":
        return requested
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        choice = "flash_attention_2"
    elif hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        choice = "sdpa"
    else:
        choice = "eager"
    logger.info("attention implementation: auto -> %s", choice)
    return choice


def mask_logits(logits: torch.Tensor, num_classes: torch.Tensor) -> torch.Tensor:
    """Set logits of classes >= num_classes[row] to the dtype's finite minimum."""
    classes = torch.arange(logits.shape[-1], device=logits.device)
    invalid = classes.unsqueeze(0) >= num_classes.unsqueeze(1)
    return logits.masked_fill(invalid, torch.finfo(logits.dtype).min)


def check_labels(labels: torch.Tensor, num_classes: torch.Tensor, ids: list[str] | None) -> None:
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten().tolist()
    if bad:
        rows = ", ".join(
            f"{ids[i] if ids else f'row {i}'} (label {int(labels[i])}, "
            f"num_classes {int(num_classes[i])})"
            for i in bad[:5]
        )
        raise LabelOutOfRangeError(f"{len(bad)} label(s) outside their dataset's classes: {rows}")


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: torch.Tensor,
    ids: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy over masked logits, computed in fp32. Returns (loss, masked logits)."""
    check_labels(labels, num_classes, ids)
    masked = mask_logits(logits, num_classes)
    loss = nn.functional.cross_entropy(masked.float(), labels, reduction="none")
    return loss, masked


class VLMClassifier(nn.Module):
    """A Qwen-VL (with its LM head) plus one shared classification head.

    ``forward`` classifies (pooled hidden states -> head); ``lm_logits`` is the generative
    objective of VQA datasets: LM-head logits at the supervised positions only, so a 150k-token
    vocabulary never costs a full [rows, length, vocab] tensor.
    """

    def __init__(
        self, vlm: nn.Module, num_labels: int, pooling: Literal["mean", "last"] = "mean"
    ) -> None:
        super().__init__()
        self.vlm = vlm
        self.hf_config: Any = vlm.config  # the VLM's config (FLOPs, token ids)
        hidden = int(vlm.config.text_config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.head = nn.Linear(hidden, num_labels)
        self.num_labels = num_labels
        self.pooling = pooling
        self.image_token_id = int(vlm.config.image_token_id)  # type: ignore[union-attr,arg-type]
        # Per dataset: kind, num_classes and label names (index = label), saved with the head.
        self.datasets: dict[str, Any] = {}

    @classmethod
    def from_pretrained(
        cls, path: Path | str, attn_implementation: str = "auto", dtype: torch.dtype = torch.float32
    ) -> VLMClassifier:
        """Load an exported model or a checkpoint's hf/ directory: the VLM, the head and the
        label names (``model.label_names("digits")``)."""
        return load_classifier(Path(path), attn_implementation, dtype)

    def label_names(self, dataset: str) -> list[str] | None:
        return self.datasets.get(dataset, {}).get("labels")

    @property
    def backbone(self) -> nn.Module:
        """The bare VLM (vision tower, merger, language model), without the LM head."""
        return self.vlm.model  # type: ignore[return-value]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Head logits [rows, num_labels]; with ``targets`` (a packed VQA batch), LM logits at
        the supervised positions instead. One entry point, so DeepSpeed's engine sees both."""
        if targets is not None:
            assert position_ids is not None, "packed batches carry their own position ids"
            return self.lm_logits(
                input_ids, position_ids, attention_mask, pixel_values, image_grid_thw, targets
            )
        assert attention_mask is not None
        out = self.backbone(
            input_ids=input_ids,
            # Given by the data loader ([4, B, L], see workers.data.vqa.mrope_positions), the
            # model skips its own per-sample position loop and its device syncs.
            position_ids=position_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            # The image-token map lets the model build its 3-D mRoPE positions; without it
            # transformers falls back to 1-D positions, unlike the model's pretraining.
            mm_token_type_ids=(input_ids == self.image_token_id).int(),
            use_cache=False,
        )
        hidden = out.last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:  # last non-padding token; sequences are right-padded
            last = attention_mask.sum(1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled)

    def lm_logits(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """[N, vocab] logits at the N positions where targets != -100 (row-major)."""
        out = self.backbone(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            use_cache=False,
        )
        hidden = out.last_hidden_state[targets != -100]
        return self.vlm.lm_head(hidden)  # type: ignore[operator]


def load_backbone(path: Path, attn_implementation: str, dtype: torch.dtype) -> nn.Module:
    """Load the VLM with its LM head from a local HF directory: the same call for a tiny model
    and a 7B."""
    from transformers import AutoModelForImageTextToText

    from workers.models.vision_attention import (
        install_vision_precompute,
        use_varlen_vision_attention,
    )

    attn = select_attn_implementation(attn_implementation)
    vlm = AutoModelForImageTextToText.from_pretrained(
        str(path), attn_implementation=attn, dtype=dtype, local_files_only=True
    )
    # The vision tower's windows in one launch, and its per-forward index tensors built on
    # the CPU (workers/models/vision_attention.py): 8 % -> 40 % MFU on an H100 (bench/gpu_mfu).
    use_varlen_vision_attention(vlm, attn)
    install_vision_precompute(vlm)
    return vlm


def build_classifier(
    model_path: Path,
    num_labels: int,
    pooling: Literal["mean", "last"],
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> VLMClassifier:
    """A fresh head on a pretrained backbone, or a saved classifier when model_path has a head."""
    if (model_path / META_FILE).is_file():
        return load_classifier(model_path, attn_implementation, dtype)
    backbone = load_backbone(model_path, attn_implementation, dtype)
    return VLMClassifier(backbone, num_labels, pooling).to(dtype)


def compile_blocks(vlm: nn.Module, backend: str = "inductor") -> int:
    """torch.compile every vision block and decoder layer in place (regional compilation: the
    blocks of one type share their compiled code, so a 36-layer model compiles like one layer).
    Returns the number of blocks compiled."""
    inner: Any = vlm.model
    blocks: list[nn.Module] = [*inner.visual.blocks, *inner.language_model.layers]
    for block in blocks:
        block.compile(backend=backend)
    logger.info("torch.compile (%s): %d vision blocks and decoder layers", backend, len(blocks))
    return len(blocks)


LORA_PREFIX = "vlm.model.language_model."


def add_lora(model: VLMClassifier, r: int, alpha: int, dropout: float, targets: list[str]) -> int:
    """Inject LoRA adapters into the language model's ``targets`` (peft, in place), freeze every
    other weight but the classification head; return the number of trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    lm = model.backbone.language_model
    assert isinstance(lm, nn.Module)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    inject_adapter_in_model(config, lm)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name or name.startswith("head.")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not any("lora_" in n for n, _ in model.named_parameters()):
        raise ValueError(f"model.lora.target_modules {targets} matched no module of the LM")
    return trainable


def merged_state_dict(vlm: nn.Module) -> dict[str, torch.Tensor]:
    """The VLM's weights with LoRA adapters merged in, under the base model's names."""
    from peft.tuners.lora import LoraLayer

    state = {k: v for k, v in vlm.state_dict().items() if "lora_" not in k}
    for name, module in vlm.named_modules():
        if isinstance(module, LoraLayer):
            base = f"{name}.base_layer.weight"
            delta = sum(
                module.get_delta_weight(a)  # type: ignore[attr-defined]
                for a in module.active_adapters
            )
            state[f"{name}.weight"] = (state.pop(base) + delta).detach()
            if f"{name}.base_layer.bias" in state:
                state[f"{name}.bias"] = state.pop(f"{name}.base_layer.bias")
    return state


@dataclass(frozen=True)
class ClassifierSnapshot:
    """What ``save_classifier`` writes of a model's weights, copied to CPU memory: the VLM's
    state dict (LoRA adapters merged) and the head's. A copy, so that the model can keep
    training while the copy is written (workers/train.py's asynchronous checkpoints)."""

    vlm: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]


def snapshot_classifier(model: VLMClassifier) -> ClassifierSnapshot:
    """The weights ``save_classifier`` writes, as CPU copies (under ZeRO-3: call it inside the
    gather, where every parameter is whole)."""
    has_lora = any("lora_" in n for n, _ in model.vlm.named_parameters())
    state = merged_state_dict(model.vlm) if has_lora else model.vlm.state_dict()
    return ClassifierSnapshot(cpu_copies(state), cpu_copies(model.head.state_dict()))


def cpu_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every tensor. Entries that are the same view of one storage (tied
    weights: the embeddings and the LM head) share one copy, so that ``save_pretrained`` still
    sees them tied and writes what it writes for the live model; other views of one storage
    (DeepSpeed's flat buffer) become separate tensors, as ``save_pretrained`` makes them."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if key not in copies:
            copies[key] = t.detach().to("cpu", copy=True)
        out[name] = copies[key]
    return out


def save_classifier(
    model: VLMClassifier,
    out_dir: Path,
    source_dir: Path,
    datasets: dict[str, Any],
    snapshot: ClassifierSnapshot | None = None,
) -> None:
    """Write backbone (save_pretrained), head and metadata; copy tokenizer and image processor.
    With ``snapshot``, its weights are written, not the model's (which only gives the config,
    the class and the tied-weight names: it may be training meanwhile)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        state: dict[str, torch.Tensor] | None = dict(snapshot.vlm)  # save_pretrained edits it
        head = snapshot.head
    else:
        has_lora = any("lora_" in n for n, _ in model.vlm.named_parameters())
        state = merged_state_dict(model.vlm) if has_lora else None
        # clone(): under DeepSpeed the head's tensors are views into the flat buffer of every
        # parameter, and torch.save writes a view's whole storage (the head file of a 7B model
        # would hold all 7B weights).
        head = {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()}
    model.vlm.save_pretrained(out_dir, state_dict=state)  # type: ignore[operator]
    torch.save(head, out_dir / HEAD_FILE)
    meta = {"num_labels": model.num_labels, "pooling": model.pooling, "datasets": datasets}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    for name in PROCESSOR_FILES:
        if (source_dir / name).is_file() and source_dir != out_dir:
            shutil.copy2(source_dir / name, out_dir / name)


def load_classifier(
    path: Path, attn_implementation: str = "auto", dtype: torch.dtype = torch.float32
) -> VLMClassifier:
    meta = json.loads((path / META_FILE).read_text())
    backbone = load_backbone(path, attn_implementation, dtype)
    model = VLMClassifier(backbone, int(meta["num_labels"]), meta["pooling"])
    model.head.load_state_dict(torch.load(path / HEAD_FILE, weights_only=True))
    model.datasets = dict(meta.get("datasets", {}))
    return model.to(dtype)

"""Per-dataset logits masking keeps every loss finite, in fp32 and bf16; a label that its
dataset's mask would hide is an error naming the row, never a NaN and never clamped."""

from __future__ import annotations

import pytest
import torch

from workers.models.classifier import LabelOutOfRangeError, classification_loss, mask_logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_losses_are_finite_and_match_unmasked_softmax(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(4, 10) * 30).to(dtype).requires_grad_()
    num_classes = torch.tensor([10, 3, 2, 7])
    labels = torch.tensor([9, 2, 0, 6])
    loss, masked = classification_loss(logits, labels, num_classes)
    assert torch.isfinite(loss).all()
    assert not torch.isinf(masked).any()
    loss.mean().backward()
    assert torch.isfinite(logits.grad).all()
    # Row 1 is a 3-class problem: its loss equals cross-entropy over its first 3 logits only.
    expected = torch.nn.functional.cross_entropy(logits[1:2, :3].float(), labels[1:2])
    assert torch.allclose(loss[1], expected, atol=1e-2 if dtype == torch.bfloat16 else 1e-5)
    # Masked classes can never be predicted.
    assert (masked.argmax(-1) < num_classes).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_uses_the_dtypes_finite_minimum(dtype: torch.dtype) -> None:
    masked = mask_logits(torch.zeros(1, 4, dtype=dtype), torch.tensor([2]))
    assert masked[0, 3].item() == torch.finfo(dtype).min
    assert torch.isfinite(masked).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_label_masked_out_by_mistake_is_an_error_not_a_nan(dtype: torch.dtype) -> None:
    logits = torch.randn(3, 10, dtype=dtype)
    with pytest.raises(LabelOutOfRangeError, match=r"faces/7 \(label 5, num_classes 2\)"):
        classification_loss(
            logits, torch.tensor([1, 5, 0]), torch.tensor([10, 2, 2]), ["d/1", "faces/7", "faces/8"]
        )

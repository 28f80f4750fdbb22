"""Per-pixel cross entropy as mmsegmentation's ``CrossEntropyLoss`` reduces it.

mmseg 1.x (``mmseg/models/losses/cross_entropy_loss.py``) computes ``F.cross_entropy(reduction='none',
ignore_index=...)``, where ignored pixels contribute 0, then with its default ``avg_non_ignore=False``
takes the mean over *all* pixels, ignored ones included. PyTorch's (and transformers' UperNet's)
``CrossEntropyLoss(ignore_index=...)`` averages over the non-ignored pixels only: ``avg_non_ignore=True``.
The two agree when no pixel is ignored; otherwise mmseg's value is smaller by the fraction ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_labels(labels: torch.Tensor, num_classes: int, images: torch.Size, ignore_index: int) -> None:
    """ValueError unless ``labels`` is a (B, H, W) integer map of class indices (or ``ignore_index``) for
    images of shape ``images`` (B, C, H, W)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 3 or labels.shape[0] != images[0] or labels.shape[1:] != images[2:]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not fit images of shape "
            f"{(images[0], *images[2:])}: one (H, W) label map per image is needed"
        )
    valid = labels[labels != ignore_index]
    if valid.numel() and (valid.min() < 0 or valid.max() >= num_classes):
        bad = valid.max() if valid.max() >= num_classes else valid.min()
        raise ValueError(
            f"labels hold class {int(bad)} but the model has {num_classes} classes "
            f"(0..{num_classes - 1}, {ignore_index} ignored)"
        )


def segmentation_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, avg_non_ignore: bool = False
) -> torch.Tensor:
    """Mean cross entropy of (B, K, H, W) logits against (B, H, W) labels (see the module docstring)."""
    check_labels(labels, logits.shape[1], logits.shape, ignore_index)
    loss = F.cross_entropy(logits.float(), labels.long(), reduction="none", ignore_index=ignore_index)
    if avg_non_ignore:
        return loss.sum() / (labels != ignore_index).sum().clamp(min=1)
    return loss.mean()

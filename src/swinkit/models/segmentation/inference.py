"""Semantic segmentation inference over an :class:`UperNet`: whole-image and sliding-window logits, the
mapping back to the original image, and multi-scale + flip test-time augmentation.

Mirrors mmsegmentation 1.x: ``EncoderDecoder.whole_inference`` / ``slide_inference`` / ``inference``
(``mmseg/models/segmentors/encoder_decoder.py``), ``BaseSegmentor.postprocess_result`` (un-flip, then a
bilinear resize to ``ori_shape``, then argmax) and ``SegTTAModel.merge_preds`` (``seg_tta.py``: the mean
over views of the softmax of each view's logits at the original size). Everything here is a pure function
of the model and tensors; the image-level steps (resizing, normalising) are the predictor's.

A runtime (``swinkit.runtime``) runs ``DecodeLogits``: the UperNet up to its raw decode-head logits at a
quarter of the input size. ``RuntimeNetwork`` brings them to the input size as ``UperNet.forward`` does, so
every step after the network (sliding-window averaging, flips, the resize to the original size, argmax) is
the same Python code on every runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.models.segmentation.heads import resize
from swinkit.models.segmentation.upernet import UperNet

MODES = ("whole", "slide")
TTA_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # configs/_base_/datasets/ade20k.py ``img_ratios``


@dataclass(frozen=True)
class InferenceSettings:
    """How one view's logits are computed (mmseg's ``model.test_cfg``)."""

    mode: str = "whole"  # "whole": one forward pass; "slide": overlapping crops, logits averaged
    crop_size: tuple[int, int] = (512, 512)  # (h, w) of a sliding window
    stride: tuple[int, int] = (341, 341)  # (h, w) step between windows

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"inference mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if min(self.crop_size) < 1 or min(self.stride) < 1:
            raise ValueError(
                f"sliding windows need a positive crop size and stride, got {self.crop_size} and {self.stride}"
            )


def slide_windows(
    height: int, width: int, crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) windows of mmseg's ``slide_inference`` over a ``height`` x ``width`` image.

    ``h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1`` rows (columns alike); a window that
    would leave the image is moved back inside it; a crop larger than the image is cut to the image.
    """
    (h_crop, w_crop), (h_stride, w_stride) = crop_size, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


class DecodeLogits(nn.Module):
    """An UperNet up to its raw logits: (B, 3, H, W) pixels -> a 1-tuple of (B, num_classes, H/4, W/4)
    decode-head logits, without the auxiliary head or the resize to the input size (the graph a runtime runs;
    ``UperNet.forward`` without its last step)."""

    def __init__(self, model: UperNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor]:
        features = self.model.backbone(pixel_values)  # [(B, C_i, H/4/2^i, W/4/2^i)]
        return (self.model.decode_head(features),)  # (B, num_classes, H/4, W/4)


@dataclass(frozen=True)
class RuntimeNetwork:
    """Logits at the input size from a runtime's raw decode-head logits (``DecodeLogits`` on a backend)."""

    raw: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]  # a swinkit.runtime Backend
    num_classes: int
    align_corners: bool

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, H, W) float32 logits of (B, 3, H, W) inputs: the raw logits resized bilinearly
        (``UperNet.forward``'s last step, in float32 whatever the runtime's precision)."""
        raw = self.raw(pixel_values)
        raw = raw[0] if isinstance(raw, tuple) else raw  # (B, num_classes, H/4, W/4)
        return resize(raw.float(), pixel_values.shape[2:], self.align_corners)


Network = UperNet | RuntimeNetwork


def whole_inference(model: Network, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, num_classes, H, W) logits of (B, 3, H, W) inputs in one pass (no auxiliary head)."""
    if isinstance(model, UperNet):
        return model(pixel_values, auxiliary=False).logits
    return model(pixel_values)


def slide_inference(
    model: Network, pixel_values: torch.Tensor, crop_size: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """(B, num_classes, H, W) logits: each window's logits summed in place, divided by the windows covering
    each pixel (mmseg's ``preds / count_mat``)."""
    batch, _, height, width = pixel_values.shape
    preds = pixel_values.new_zeros((batch, model.num_classes, height, width))
    count = pixel_values.new_zeros((batch, 1, height, width))
    for y1, y2, x1, x2 in slide_windows(height, width, crop_size, stride):
        crop = pixel_values[:, :, y1:y2, x1:x2]  # (B, 3, h_crop, w_crop)
        preds[:, :, y1:y2, x1:x2] += whole_inference(model, crop)
        count[:, :, y1:y2, x1:x2] += 1
    assert bool((count > 0).all()), "the sliding windows left pixels uncovered"
    return preds / count


def view_logits(model: Network, pixel_values: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """(B, num_classes, H, W) logits of one view by ``settings.mode`` (mmseg's ``EncoderDecoder.inference``)."""
    if settings.mode == "slide":
        return slide_inference(model, pixel_values, settings.crop_size, settings.stride)
    return whole_inference(model, pixel_values)


def to_original(
    logits: torch.Tensor, original_size: Sequence[int], *, flipped: bool = False, align_corners: bool = False
) -> torch.Tensor:
    """(B, C, H0, W0) logits of a view mapped back to the original image: un-flipped (horizontal), then
    resized bilinearly to ``original_size`` (H0, W0), as mmseg's ``postprocess_result``."""
    if flipped:
        logits = logits.flip(dims=(3,))
    return F.interpolate(logits, size=tuple(original_size), mode="bilinear", align_corners=align_corners)


def merge_views(views: Iterable[torch.Tensor]) -> torch.Tensor:
    """(B, C, H0, W0) mean over views of each view's softmax over classes (mmseg's ``SegTTAModel.merge_preds``);
    ``views`` are (B, C, H0, W0) logits already at the original size, summed one at a time."""
    total, count = None, 0
    for logits in views:
        probs = logits.softmax(dim=1)
        total = probs if total is None else total + probs
        count += 1
    if total is None:
        raise ValueError("test-time augmentation needs at least one view")
    return total / count

"""Anchor generation as mmdetection's ``AnchorGenerator`` (v2.0 formula, no rounding), as pure functions.

Anchors of a level are ordered as mmdet orders them: feature rows, then columns, then the ``A`` base anchors of
a location (ratios major, scales minor when ``scale_major``).
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["base_anchors", "grid_anchors", "multi_level_anchors", "multi_level_valid_flags", "valid_flags"]


def base_anchors(
    base_size: float,
    scales: Sequence[float],
    ratios: Sequence[float],
    center_offset: float = 0.0,
    scale_major: bool = True,
) -> Tensor:
    """The ``A = len(ratios) * len(scales)`` anchors of one location: ``-> (A, 4)``.

    Mirrors ``AnchorGenerator.gen_single_level_base_anchors``: ``h_ratio = sqrt(ratio)``, ``w_ratio = 1 / h_ratio``,
    widths ``base_size * w_ratio * scale`` around the centre ``center_offset * base_size``.
    """
    scales_t = torch.tensor(list(scales), dtype=torch.float32)
    ratios_t = torch.tensor(list(ratios), dtype=torch.float32)
    x_center = y_center = center_offset * base_size
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (base_size * w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (base_size * h_ratios[:, None] * scales_t[None, :]).view(-1)
    else:
        ws = (base_size * scales_t[:, None] * w_ratios[None, :]).view(-1)
        hs = (base_size * scales_t[:, None] * h_ratios[None, :]).view(-1)
    return torch.stack(
        [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1
    )


def grid_anchors(base: Tensor, featmap_size: tuple[int, int], stride: int | tuple[int, int]) -> Tensor:
    """The base anchors shifted to every feature location: ``(A, 4) -> (H * W * A, 4)``.

    Mirrors ``AnchorGenerator.single_level_grid_priors``: location ``(row, col)`` is shifted by
    ``(col * stride_w, row * stride_h)``; ``stride`` is an int or ``(stride_w, stride_h)``.
    """
    stride_w, stride_h = (stride, stride) if isinstance(stride, int) else stride
    feat_h, feat_w = featmap_size
    shift_x = torch.arange(0, feat_w, device=base.device).to(base.dtype) * stride_w
    shift_y = torch.arange(0, feat_h, device=base.device).to(base.dtype) * stride_h
    shift_xx = shift_x.repeat(feat_h)  # (H*W,)
    shift_yy = shift_y.view(-1, 1).repeat(1, feat_w).view(-1)  # (H*W,)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)  # (H*W, 4)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)  # (H*W*A, 4)


def multi_level_anchors(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int] = (4, 8, 16, 32, 64),
    scales: Sequence[float] = (8,),
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    center_offset: float = 0.0,
) -> list[Tensor]:
    """Anchors of every level, ``[(H_i * W_i * A, 4)]``, as ``AnchorGenerator.grid_priors``; base size = stride."""
    if len(featmap_sizes) != len(strides):
        raise ValueError(
            f"multi_level_anchors needs one stride per level, got {len(featmap_sizes)} sizes and {len(strides)} strides."
        )
    return [
        grid_anchors(base_anchors(stride, scales, ratios, center_offset), size, stride)
        for size, stride in zip(featmap_sizes, strides)
    ]


def valid_flags(featmap_size: tuple[int, int], valid_size: tuple[int, int], num_base_anchors: int) -> Tensor:
    """Whether each anchor's location lies in the ``valid_size`` top-left part of the map: ``-> (H * W * A,) bool``.

    Mirrors ``AnchorGenerator.single_level_valid_flags``.
    """
    feat_h, feat_w = featmap_size
    valid_h, valid_w = valid_size
    if valid_h > feat_h or valid_w > feat_w:
        raise ValueError(f"valid size {valid_size} is larger than the feature map {featmap_size}.")
    valid_x = torch.zeros(feat_w, dtype=torch.bool)
    valid_y = torch.zeros(feat_h, dtype=torch.bool)
    valid_x[:valid_w] = True
    valid_y[:valid_h] = True
    valid = valid_x.repeat(feat_h) & valid_y.view(-1, 1).repeat(1, feat_w).view(-1)  # (H*W,)
    return valid[:, None].expand(valid.size(0), num_base_anchors).reshape(-1)  # (H*W*A,)


def multi_level_valid_flags(
    featmap_sizes: Sequence[tuple[int, int]],
    pad_shape: tuple[int, int],
    strides: Sequence[int] = (4, 8, 16, 32, 64),
    num_base_anchors: int = 3,
) -> list[Tensor]:
    """Valid flags of every level for an image padded to ``pad_shape`` (H, W), as ``AnchorGenerator.valid_flags``:
    a location is valid when it lies within ``ceil(pad / stride)`` of the level."""
    height, width = pad_shape[:2]
    flags = []
    for (feat_h, feat_w), stride in zip(featmap_sizes, strides):
        valid_h = min(math.ceil(height / stride), feat_h)
        valid_w = min(math.ceil(width / stride), feat_w)
        flags.append(valid_flags((feat_h, feat_w), (valid_h, valid_w), num_base_anchors))
    return flags

"""mmdetection's FPN neck (``mmdet/models/necks/fpn.py``) as the Swin Mask R-CNN configs use it.

``start_level=0``, ``add_extra_convs=False``, no norm, no activation: 1x1 lateral convolutions, a top-down
path adding each coarser map upsampled by nearest-neighbour interpolation *to the finer map's size*,
3x3 output convolutions, and extra levels by ``max_pool2d(kernel 1, stride 2)`` of the last output.
Module names are mmdet's (``lateral_convs.{i}.conv``, ``fpn_convs.{i}.conv``), so its keys load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvLayer(nn.Module):
    """A convolution with bias held as ``.conv`` and an optional ReLU (mmcv's ``ConvModule`` without norm)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, relu: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.activate = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


def xavier_uniform_init(conv: nn.Conv2d) -> None:
    """mmcv's ``xavier_init(distribution='uniform')``: Xavier uniform weight (gain 1), zero bias."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class FPN(nn.Module):
    """(B, C_i, H_i, W_i) maps of the backbone to ``num_outs`` (B, out_channels, H_l, W_l) maps, finest first."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs {num_outs} is fewer than the {len(in_channels)} input levels")
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(ConvLayer(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvLayer(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )

    def init_weights(self) -> None:
        """mmdet's FPN ``init_cfg``: Xavier uniform on every Conv2d."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                xavier_uniform_init(module)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.in_channels):
            raise ValueError(f"FPN takes {len(self.in_channels)} feature maps, got {len(features)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]  # [(B, C, H_i, W_i)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down, cumulative (mmdet's order)
            upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + upsampled
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for _ in range(self.num_outs - len(outs)):
            outs.append(extra_level(outs[-1]))
        return outs


def extra_level(x: torch.Tensor) -> torch.Tensor:
    """mmdet's extra FPN level ``F.max_pool2d(x, 1, stride=2)``: a 1x1 window's max is its one element, so
    it is the strided slice, (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)), equal value for value. As a slice
    the level survives OpenVINO int8: the CPU plugin returned the max-pool's graph output scaled to ~1e-5
    once NNCF had quantized the RPN convolution reading it (openvino 2026.4, NNCF transformer scheme)."""
    return x[:, :, ::2, ::2]

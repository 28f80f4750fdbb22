"""Decode heads of mmsegmentation 1.x: ``UPerHead`` (with PSPNet's pyramid pooling) and ``FCNHead``.

Followed: ``mmseg/models/decode_heads/uper_head.py``, ``psp_head.py`` (``PPM``), ``fcn_head.py`` and
``decode_head.py`` (``cls_seg``: Dropout2d then the 1x1 ``conv_seg``), with mmcv's ``ConvModule``
(conv without bias, BatchNorm, ReLU). Module names are mmseg's, so its head keys load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.layers.pooling import AdaptiveAvgPool2d


class ConvModule(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU, as mmcv's ``ConvModule`` with ``norm_cfg=dict(type='BN')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))

    def init_weights(self) -> None:
        """mmcv's ConvModule initialisation: Kaiming normal (fan out, ReLU) conv, unit BatchNorm."""
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Bilinear resize of a (B, C, h, w) map to (B, C, *size)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class _ClassifierHead(nn.Module):
    """mmseg's ``BaseDecodeHead.cls_seg``: Dropout2d, then a 1x1 convolution to the classes."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(feat))

    def init_weights(self) -> None:
        """mmseg's decode-head initialisation: ConvModules as mmcv, ``conv_seg`` normal(0, 0.01)."""
        for module in self.modules():
            if isinstance(module, ConvModule):
                module.init_weights()
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)


class UPerHead(_ClassifierHead):
    """UPerNet's head: pyramid pooling on the last map, an FPN over all maps, fused at the first map's size.

    Input: the backbone maps [(B, C_0, H/4, W/4), ..., (B, C_3, H/32, W/32)]; output (B, num_classes, H/4, W/4).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__(channels, num_classes, dropout)
        self.align_corners = align_corners
        last = in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool2d(scale), ConvModule(last, channels, 1)) for scale in pool_scales
        )
        self.bottleneck = ConvModule(last + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        """PPM: (B, C, h, w) -> pooled branches upsampled back, concatenated with x -> (B, channels, h, w)."""
        size = x.shape[2:]
        branches = [resize(branch(x), size, self.align_corners) for branch in self.psp_modules]
        return self.bottleneck(torch.cat([x, *branches], dim=1))  # (B, C + n*channels, h, w) in

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + resize(
                laterals[i], laterals[i - 1].shape[2:], self.align_corners
            )
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        outs = [outs[0]] + [resize(out, size, self.align_corners) for out in outs[1:]]
        fused = self.fpn_bottleneck(torch.cat(outs, dim=1))  # (B, n_levels*channels, H/4, W/4) in
        return self.cls_seg(fused)


class FCNHead(_ClassifierHead):
    """FCN head on one backbone map: ``num_convs`` 3x3 ConvModules (optionally concatenated with the input).

    Input: the backbone maps; reads ``inputs[in_index]`` (B, C, h, w); output (B, num_classes, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        in_index: int = 2,
        num_convs: int = 1,
        concat_input: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(channels, num_classes, dropout)
        self.in_index = in_index
        widths = [in_channels] + [channels] * (num_convs - 1)
        self.convs = nn.Sequential(*(ConvModule(w, channels, 3, padding=1) for w in widths))
        self.conv_cat = ConvModule(in_channels + channels, channels, 3, padding=1) if concat_input else None

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = inputs[self.in_index]
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))  # (B, C + channels, h, w) in
        return self.cls_seg(out)

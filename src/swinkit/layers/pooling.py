"""Adaptive average pooling that traces with dynamic input sizes (PSPNet's pyramid pooling in ONNX).

``F.adaptive_avg_pool2d`` exports to ONNX only when the input is a multiple of the output size (it becomes
an AveragePool with a fixed kernel), so a graph traced at one size cannot pool another. Under the
TorchScript tracer the pooling is written as two averaging matrices instead, built from the traced sizes
with ATen's bin bounds (``aten/src/ATen/native/AdaptiveAveragePooling.cpp``: ``start_index`` =
floor(i * H / out), ``end_index`` = ceil((i + 1) * H / out)); eager runs torch's own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.layers.window import Size


def averaging_matrix(length: Size, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(bins, length): row i averages positions floor(i*L/bins) .. ceil((i+1)*L/bins) - 1."""
    index = torch.arange(bins, device=device)
    start = (index * length) // bins  # (bins,)
    end = ((index + 1) * length + bins - 1) // bins  # (bins,), ceil division
    positions = torch.arange(length, device=device)  # (L,)
    inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])  # (bins, L)
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def traceable_adaptive_avg_pool2d(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` of a (B, C, H, W) map as P_h @ x @ P_w^T: (B, C, out, out)."""
    rows = averaging_matrix(x.shape[2], output_size, x.dtype, x.device)  # (out, H)
    cols = averaging_matrix(x.shape[3], output_size, x.dtype, x.device)  # (out, W)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))  # (B, C, out, out)


class AdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` (square output) that traces at any input size."""

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return traceable_adaptive_avg_pool2d(x, self.output_size)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

"""FLOP counting as the Swin papers count: one multiply-add is one FLOP.

The count is *measured*, not derived from a formula: one forward pass runs under
``torch.utils.flop_counter.FlopCounterMode``, which records every matrix product and convolution the
model actually performs (so padding at odd input sizes, windows clamped to small maps, the v2
continuous-position-bias MLP and the head are all included). FlopCounterMode counts 2 FLOPs per
multiply-add; the totals here are halved to the papers' convention.

Two details make the measure match the official tables (Swin-T 4.5G, Swin-B-384 47.1G, SwinV2-T w8 5.9G):

* Attention. On CPU, ``scaled_dot_product_attention`` dispatches to the fused
  ``aten._scaled_dot_product_flash_attention_for_cpu`` kernel, which FlopCounterMode does not know, so
  its two matrix products (Q K^T and A V) are registered here. On the ``meta`` device SDPA decomposes
  into batched matmuls, which are counted as they are.
* Element-wise work (LayerNorm, softmax, GELU, residual adds) is not counted. The official ``flops()``
  methods add one FLOP per LayerNorm element and nothing for the rest; that is under 0.1% of the total.

:func:`config_flops` builds the model on the ``meta`` device (no memory, no weights, no arithmetic),
so counting even Swin-L at 384 takes a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from swinkit.presets import SwinConfig

if TYPE_CHECKING:
    from swinkit.models.swin import ClassifierConfig

_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """FLOPs (2 per multiply-add, FlopCounterMode's convention) of softmax(Q K^T) V for 4-D Q, K, V."""
    *batch, q_len, head_dim = query_shape
    k_len, value_dim = key_shape[-2], value_shape[-1]
    batch_heads = 1
    for n in batch:
        batch_heads *= n
    return 2 * batch_heads * q_len * k_len * (head_dim + value_dim)


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def count_flops_by_op(
    model: nn.Module, image_size: int | tuple[int, int], batch_size: int = 1
) -> dict[str, int]:
    """Multiply-adds of one forward pass of ``model`` on a (batch_size, C, H, W) input, per aten op.

    The input is all zeros on the model's device and dtype; the model's train/eval mode is left alone.
    """
    height, width = _as_hw(image_size)
    if batch_size < 1 or height < 1 or width < 1:
        raise ValueError(f"batch_size and image_size must be positive, got {batch_size} and {image_size}")
    reference = next(model.parameters())
    channels = model.config.in_channels if hasattr(model, "config") else 3
    pixels = torch.zeros(batch_size, channels, height, width, device=reference.device, dtype=reference.dtype)
    counter = FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _cpu_sdpa_flops})
    with torch.no_grad(), counter:
        model(pixels)
    return {str(op): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}


def count_flops(model: nn.Module, image_size: int | tuple[int, int], batch_size: int = 1) -> int:
    """Multiply-adds (the papers' "FLOPs") of one forward pass of ``model`` at ``image_size``."""
    return sum(count_flops_by_op(model, image_size, batch_size).values())


def config_flops(
    config: ClassifierConfig | SwinConfig,
    image_size: int | tuple[int, int] | None = None,
    backbone: bool = False,
) -> int:
    """Multiply-adds of one image through the model of ``config`` (native size unless ``image_size``): the
    classifier of a ClassifierConfig, the headless one (pooled features) of a bare trunk's SwinConfig, or
    with ``backbone`` the multi-scale backbone.

    The model is built on the ``meta`` device, so nothing is allocated or computed.
    """
    from swinkit.models.factory import build_model
    from swinkit.models.swin import ClassifierConfig

    if isinstance(config, SwinConfig):
        config = ClassifierConfig(config, num_classes=0)
    with torch.device("meta"):
        model = build_model(config, backbone=backbone).eval()
    return count_flops(model, config.trunk.image_size if image_size is None else image_size)

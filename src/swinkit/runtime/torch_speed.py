"""Speed options of the PyTorch path: oneDNN-prepacked linear layers, and ``torch.compile`` with a dynamic
batch.

Prepacking: ``prepack_linears`` gives a copy of a network whose ``nn.Linear`` layers hold their weight in
oneDNN's blocked layout, reordered once (``torch.ops.mkldnn._reorder_linear_weight``), and run
``torch.ops.mkldnn._linear_pointwise`` (what inductor's CPU freezing pass emits for a linear layer). Swin-T
224 fp32, batch 1, alternating in one process: 1.17x-1.29x eager's speed (two runs), logits within 5e-7.
MKL packed linear (``_mkl_linear``) gave 1.05-1.10x and ``torch.jit`` trace + freeze +
``optimize_for_inference`` 0.98-1.11x, so neither is used (docs/design.md, "CPU inference speed, measured").

Compiling: a Swin network's geometry (padding to window multiples, which blocks shift, the shift masks) is
decided by the image size in Python, so a compiled graph is specialised to the image size it first sees and
a new size compiles a new graph; the batch axis alone is left symbolic, so batches of any size >= 2 share
one graph (a batch of 1 is always specialised by ``torch.compile``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class PrepackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose fp32 weight oneDNN reordered once into its blocked layout."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features), as ``F.linear``."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def can_prepack(model: nn.Module) -> bool:
    """Whether oneDNN is available and ``model``'s parameters are fp32 on the CPU."""
    params = list(model.parameters())
    return torch.backends.mkldnn.is_available() and all(
        p.device.type == "cpu" and p.dtype == torch.float32 for p in params
    )


def prepack_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (fp32, CPU, for inference) with every ``nn.Linear`` a ``PrepackedLinear``."""
    if not can_prepack(model):
        raise ValueError(
            "prepacked linear layers need an fp32 model on the CPU and a PyTorch built with oneDNN"
        )
    packed = copy.deepcopy(model)
    for module in list(packed.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, PrepackedLinear(child))
    return packed


def compile_network(
    model: nn.Module, *, mode: str = "default", dynamic_batch: bool = True
) -> Callable[..., object]:
    """``torch.compile`` of ``model``, image size static and (``dynamic_batch``) the batch axis symbolic.

    Returns a callable taking the model's arguments, (B, 3, H, W) pixels first; the model is not modified.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown torch.compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    compiled = torch.compile(model, mode=mode, dynamic=False if not dynamic_batch else None)

    def run(pixels: torch.Tensor, *args: object, **kwargs: object) -> object:
        if dynamic_batch:
            torch._dynamo.maybe_mark_dynamic(pixels, 0)
            for axis in (1, 2, 3):
                torch._dynamo.mark_static(pixels, axis)
        return compiled(pixels, *args, **kwargs)

    return run

"""Speed options of the PyTorch path: ``torch.compile`` of a swinkit network with a dynamic batch.

A Swin network's geometry (padding to window multiples, which blocks shift, the shift masks) is decided by
the image size in Python, so a compiled graph is specialised to the image size it first sees and a new size
compiles a new graph; the batch axis alone is left symbolic, so batches of any size >= 2 share one graph
(a batch of 1 is always specialised by ``torch.compile``). Whether compiling pays off on a CPU is measured
in docs/design.md ("CPU inference speed, measured").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


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

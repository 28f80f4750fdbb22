"""``GraphSpec``: what a task's predictor hands the exporter and the on-the-fly tracer.

The contract every task predictor follows (``export_graph() -> GraphSpec``):

- ``module`` is an ``nn.Module`` in eval mode taking one argument, float32 pixels (B, 3, H, W) exactly as
  the predictor's ``prepare`` makes them (stacked), and returning a **tuple of tensors**: the network's raw
  outputs, nothing else (no dicts, no lists, no Python numbers). Everything after them (softmax, NMS, box
  decoding, mask pasting, resizing to the image) stays in the predictor's Python code, shared by torch and
  the graph runtimes. Each output's first axis is the batch.
- ``output_names`` names those tensors, in order (the graph's outputs; ``export.json`` records them).
  A backend returns one tensor for a graph with one output, else a tuple in this order.
- ``example`` is one prepared input (1, 3, H, W) the graph is traced on, e.g. a grey image through
  ``prepare`` (``grey_example``).
- ``dynamic_hw``: whether the graph's height and width are dynamic axes. True when the preprocessing's
  output size varies with the image (keep-ratio resizing: segmentation whole mode, Mask R-CNN), so the
  graph runs at any (B, 3, H, W); False when every prepared image has one size (a fixed-size classifier:
  a static graph is faster on OpenVINO, see ``swinkit.runtime.export``). The exporter refuses a static
  spec whose preprocessing varies in size (``check_static``).

The module must be traceable with dynamic H and W: sizes taken from ``x.shape`` stay traced values (never
Python ints or branches on them while ``torch.jit.is_tracing()``); the Swin trunk, UPerNet and the FPN are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

GREY = (124, 116, 104)  # about the ImageNet mean: a neutral image to trace on


@dataclass(frozen=True)
class GraphSpec:
    """The network of a predictor as an exportable graph (see the module docstring for the contract)."""

    module: nn.Module  # (B, 3, H, W) float32 pixels -> tuple of raw output tensors
    output_names: tuple[str, ...]  # one name per output, in order
    example: torch.Tensor  # (1, 3, H, W) one prepared input to trace on
    dynamic_hw: bool  # height and width dynamic in the graph (else fixed at the example's)

    def __post_init__(self) -> None:
        if self.example.ndim != 4 or self.example.shape[0] != 1:
            raise ValueError(
                f"a graph's example is one prepared image (1, 3, H, W), not {tuple(self.example.shape)}"
            )
        if not self.output_names:
            raise ValueError("a graph needs at least one named output")


class TupleOutputs(nn.Module):
    """``model`` with its single tensor output wrapped in a 1-tuple (the ``GraphSpec.module`` contract)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(pixel_values),)


def grey_example(
    prepare: Callable[[Image.Image], torch.Tensor], size: tuple[int, int] = (256, 256)
) -> torch.Tensor:
    """A grey image of ``size`` (width, height) through ``prepare``: (1, 3, H, W)."""
    return prepare(Image.new("RGB", size, GREY)).unsqueeze(0)


def varies_in_size(prepare: Callable[[Image.Image], torch.Tensor]) -> bool:
    """Whether ``prepare`` makes inputs whose size depends on the image (a wide and a tall image differ)."""
    wide, tall = (grey_example(prepare, size) for size in ((320, 256), (256, 320)))
    return wide.shape != tall.shape


def check_static(spec: GraphSpec, prepare: Callable[[Image.Image], torch.Tensor]) -> None:
    """ValueError when ``spec`` fixes H and W but ``prepare`` makes inputs of varying size."""
    if not spec.dynamic_hw and varies_in_size(prepare):
        raise ValueError(
            "this model's preprocessing keeps the aspect ratio, but its graph was declared with a fixed "
            "height and width (GraphSpec.dynamic_hw=False); declare it dynamic"
        )

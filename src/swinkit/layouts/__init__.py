"""Checkpoint layouts: one module per foreign layout, each mapping to the one canonical state dict.

Each layout module has ``NAME``, ``detect(state_dict) -> confidence`` and ``to_canonical(state_dict)``;
layouts whose files keep a relative position index also have ``window_size_hint(state_dict)``, and those
keeping v2 coordinate tables ``pretrained_window_sizes_hint(state_dict)``.
Layouts: ``official`` (microsoft/Swin-Transformer, SimMIM, timm < 0.9), ``hf`` (transformers), ``timm``,
``torchvision``, ``mmlab`` (mmsegmentation, mmdetection, mmpretrain).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import torch

from swinkit.layouts import hf, mmlab, official, timm, torchvision

LAYOUTS: dict[str, ModuleType] = {m.NAME: m for m in (official, hf, timm, torchvision, mmlab)}

# Wrappers that training frameworks put around the state dict.
_CONTAINER_KEYS = ("model", "state_dict", "model_state", "module", "model_ema", "state_dict_ema")


def unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint file (``{'model': ...}``, ``{'state_dict': ...}``, or bare)."""
    current: Any = checkpoint
    for _ in range(3):
        if all(isinstance(v, torch.Tensor) for v in current.values()):
            break
        inner = next((current[k] for k in _CONTAINER_KEYS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            break
        current = inner
    tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The name of the layout ``state_dict`` is in; ValueError when none recognises it."""
    scores = {name: module.detect(state_dict) for name, module in LAYOUTS.items()}
    best = max(scores, key=scores.get)
    if scores[best] <= 0:
        sample = ", ".join(list(state_dict)[:5])
        raise ValueError(f"unrecognised checkpoint layout (first keys: {sample}); pass the layout explicitly")
    return best


def to_canonical(
    state_dict: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout name, canonical state dict) for ``state_dict`` in ``layout`` (auto-detected when None)."""
    layout = layout or detect_layout(state_dict)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
    return layout, LAYOUTS[layout].to_canonical(state_dict)

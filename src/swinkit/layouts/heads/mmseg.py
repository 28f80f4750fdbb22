"""mmsegmentation segmentor checkpoints: ``EncoderDecoder`` with a Swin backbone, UPerHead and FCNHead.

Files are ``{'state_dict': ..., 'meta': ...}``. Backbone keys (``backbone.patch_embed.projection``,
``backbone.stages.{i}.blocks.{j}.attn.w_msa.qkv``, ``backbone.norm{i}``, ...) are read by
:mod:`swinkit.layouts.mmlab`; written here by its inverse (PatchMerging columns back into nn.Unfold order,
the persistent ``relative_position_index`` buffers added). Head keys are the canonical ones:
``decode_head.psp_modules.{k}.1.{conv,bn}``, ``decode_head.bottleneck``, ``lateral_convs.{i}``,
``fpn_convs.{i}``, ``fpn_bottleneck``, ``decode_head.conv_seg``, ``auxiliary_head.convs.{n}``,
``auxiliary_head.conv_seg``. The class names live in ``meta['dataset_meta']['classes']`` (mmseg 1.x) or
``meta['CLASSES']`` (0.x).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layers.window import relative_position_index
from swinkit.layouts import mmlab
from swinkit.layouts.common import rename
from swinkit.models.segmentation.config import UperNetConfig

NAME = "mmseg"

_HEAD_ROOTS = ("decode_head.", "auxiliary_head.")
_WRITE_RULES = [
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.", r"stages.\1.blocks.\2.attn.w_msa."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.ffn.layers.0.0."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.ffn.layers.1."),
    (r"layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"layers\.(\d+)\.downsample\.", r"stages.\1.downsample."),
]
_UNFOLD_ORDER = [0, 2, 1, 3]  # nn.Unfold kernel position of official slot k' (self-inverse)


def detect(state_dict: Mapping[str, Any]) -> float:
    """Confidence in [0, 1] that ``state_dict`` is an mmseg segmentor with a Swin backbone and a decode head."""
    backbone = mmlab.detect(state_dict) > 0
    head = any(
        k.startswith("decode_head.") and ".bn." in k or k == "decode_head.conv_seg.weight" for k in state_dict
    )
    return 1.0 if backbone and head else 0.0


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg names to canonical UperNet names; keys outside backbone and heads are kept (strict loading names them)."""
    backbone = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {"backbone." + k: v for k, v in mmlab.to_canonical(backbone).items()}
    out.update({k: v for k, v in state_dict.items() if not k.startswith("backbone.")})
    return out


def official_to_unfold(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder the last dimension (4C, official 2x2 concatenation order) into nn.Unfold's channel order."""
    *lead, four_c = tensor.shape
    slots = tensor.reshape(*lead, 4, four_c // 4)[..., _UNFOLD_ORDER, :]  # (..., k, C) in Unfold kernel order
    return slots.transpose(-1, -2).reshape(*lead, four_c)  # (..., c*4 + k)


def _backbone_from_canonical(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """One canonical backbone tensor under its mmseg name (with the index buffer next to a block's table)."""
    if re.match(r"layers\.\d+\.downsample\.(reduction\.weight|norm\.)", name):
        tensor = official_to_unfold(tensor)  # the reduction's columns and the 4C norm before it
    new = "backbone." + rename(name, _WRITE_RULES)
    out = {new: tensor}
    if name.endswith("attn.relative_position_bias_table"):
        window = (round(tensor.shape[0] ** 0.5) + 1) // 2
        out[new.replace("relative_position_bias_table", "relative_position_index")] = relative_position_index(
            window
        )
    return out


def from_canonical(state_dict: Mapping[str, torch.Tensor], config: UperNetConfig) -> dict[str, torch.Tensor]:
    """Canonical UperNet names to mmseg's ``state_dict`` names (UperNetConfig admits Swin v1 backbones only)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name.startswith("backbone."):
            out.update(_backbone_from_canonical(name[len("backbone.") :], tensor))
        else:
            out[name] = tensor
    return out


def to_checkpoint(state_dict: Mapping[str, torch.Tensor], config: UperNetConfig) -> dict[str, Any]:
    """A ``{'state_dict', 'meta'}`` file body as mmseg 1.x writes it (classes in ``meta['dataset_meta']``)."""
    meta = {"dataset_meta": {"classes": list(config.label_names)}, "swinkit": {"config": config.to_dict()}}
    return {"state_dict": from_canonical(state_dict, config), "meta": meta}


def classes_from_meta(checkpoint: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The class names an mmseg checkpoint's ``meta`` carries (1.x ``dataset_meta.classes`` or 0.x ``CLASSES``)."""
    meta = checkpoint.get("meta")
    if not isinstance(meta, Mapping):
        return None
    dataset_meta = meta.get("dataset_meta")
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else meta.get("CLASSES")
    if not classes:
        return None
    names = tuple(str(c).strip() for c in classes)  # mmseg's ADE20K names include 'bed '
    return None if names == tuple(f"LABEL_{i}" for i in range(len(names))) else names


def config_from_meta(checkpoint: Mapping[str, Any]) -> UperNetConfig | None:
    """The UperNetConfig a checkpoint written by swinkit keeps in ``meta['swinkit']``; None for other files."""
    meta = checkpoint.get("meta")
    saved = meta.get("swinkit") if isinstance(meta, Mapping) else None
    if not isinstance(saved, Mapping) or "config" not in saved:
        return None
    return UperNetConfig.from_dict(dict(saved["config"]))

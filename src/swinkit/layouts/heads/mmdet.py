"""mmdetection detector checkpoints: Mask R-CNN / Faster R-CNN with a Swin backbone, FPN, RPN and RoI heads.

Two sources, both ``{'state_dict': ..., 'meta': ...}`` files:

* mmdetection 2.16+ / 3.x (the mmdet model zoo): the backbone in the OpenMMLab layout
  (``backbone.patch_embed.projection``, ``backbone.stages.{i}.blocks.{j}.attn.w_msa.*``, ``backbone.norm{i}``),
  read by :mod:`swinkit.layouts.mmlab` and written here by its inverse (PatchMerging columns back into
  nn.Unfold order, the persistent ``relative_position_index`` buffers added);
* the official Swin-Transformer-Object-Detection repository (mmdet 2.x fork): the backbone in the official
  Swin layout (``backbone.patch_embed.proj``, ``backbone.layers.{i}.blocks.{j}.attn.qkv``,
  ``backbone.layers.{i}.downsample``, ``backbone.norm{i}``), its index buffers dropped.

Head keys are the canonical ones, unchanged in both: ``neck.lateral_convs.{i}.conv``, ``neck.fpn_convs.{i}.conv``,
``rpn_head.rpn_conv``, ``rpn_head.rpn_cls``, ``rpn_head.rpn_reg``, ``roi_head.bbox_head.shared_fcs.{i}``,
``roi_head.bbox_head.fc_cls``, ``roi_head.bbox_head.fc_reg``, ``roi_head.mask_head.convs.{i}.conv``,
``roi_head.mask_head.upsample``, ``roi_head.mask_head.conv_logits``. Class names live in
``meta['dataset_meta']['classes']`` (3.x) or ``meta['CLASSES']`` (2.x).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layers.window import relative_position_index
from swinkit.layouts import mmlab, official
from swinkit.layouts.common import rename
from swinkit.layouts.heads.mmseg import official_to_unfold

NAME = "mmdet"
OFFICIAL_NAME = "mmdet_official"  # the official Swin-Transformer-Object-Detection repository

HEAD_MARKER = "rpn_head.rpn_cls.weight"
_OFFICIAL_MARKER = "backbone.layers.0.blocks.0.attn.qkv.weight"
_WRITE_RULES = [
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.", r"stages.\1.blocks.\2.attn.w_msa."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.ffn.layers.0.0."),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.ffn.layers.1."),
    (r"layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"layers\.(\d+)\.downsample\.", r"stages.\1.downsample."),
]


def detect(state_dict: Mapping[str, Any]) -> float:
    """Confidence that ``state_dict`` is an mmdet 3.x detector with an OpenMMLab-layout Swin backbone."""
    return 1.0 if HEAD_MARKER in state_dict and mmlab.detect(state_dict) > 0 else 0.0


def detect_official(state_dict: Mapping[str, Any]) -> float:
    """Confidence that ``state_dict`` is a Swin-Transformer-Object-Detection detector (official backbone)."""
    return 1.0 if HEAD_MARKER in state_dict and _OFFICIAL_MARKER in state_dict else 0.0


def _split(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone tensors without the ``backbone.`` prefix, every other tensor)."""
    backbone = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
    return backbone, rest


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmdet 3.x names to canonical detector names; keys outside the known parts are kept (strict loading names them)."""
    backbone, rest = _split(state_dict)
    return {**{"backbone." + k: v for k, v in mmlab.to_canonical(backbone).items()}, **rest}


def official_to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Swin-Transformer-Object-Detection names to canonical names (the backbone's index buffers dropped)."""
    backbone, rest = _split(state_dict)
    return {**{"backbone." + k: v for k, v in official.to_canonical(backbone).items()}, **rest}


def _backbone_from_canonical(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """One canonical backbone tensor under its mmdet name (with the index buffer next to a block's table)."""
    if re.match(r"layers\.\d+\.downsample\.(reduction\.weight|norm\.)", name):
        tensor = official_to_unfold(tensor)  # the reduction's columns and the 4C norm before it
    new = "backbone." + rename(name, _WRITE_RULES)
    out = {new: tensor}
    if name.endswith("attn.relative_position_bias_table"):
        window = (round(tensor.shape[0] ** 0.5) + 1) // 2
        index = relative_position_index(window)  # (ws*ws, ws*ws), mmdet's persistent WindowMSA buffer
        out[new.replace("relative_position_bias_table", "relative_position_index")] = index
    return out


def from_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical detector names to mmdet 3.x ``state_dict`` names."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name.startswith("backbone."):
            out.update(_backbone_from_canonical(name[len("backbone.") :], tensor))
        else:
            out[name] = tensor
    return out

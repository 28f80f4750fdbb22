"""The ``timm`` layout (``timm.models.swin_transformer`` and ``swin_transformer_v2``, timm >= 0.9).

Followed: pytorch-image-models ``timm/models/swin_transformer.py`` / ``swin_transformer_v2.py`` as of
timm 0.9-1.0 (the ``SwinTransformerStage`` versions, whose ``checkpoint_filter_fn`` remaps official
weights with ``layers.(\\d+).downsample -> layers.{n+1}.downsample`` and ``head. -> head.fc.``).
Parameter names inside the blocks are the official ones; two things differ:

* patch merging sits at the *start* of the next stage: timm ``layers.{i}.downsample`` (i >= 1) is
  canonical ``layers.{i-1}.downsample``; its 2x2 concatenation order (``reshape(B, H/2, 2, W/2, 2, C)
  .permute(0, 1, 3, 4, 2, 5)``) equals the official x0, x1, x2, x3 order, so no weight permutation;
* the classifier is ``head.fc`` (a ``ClassifierHead``).

v2 keeps ``k_bias`` as a non-persistent zero buffer; ``relative_position_index``, ``relative_coords_table``
and ``attn_mask`` are non-persistent in recent timm (dropped when older files carry them). timm files
keep no window-size buffer, so v2 window sizes come from a preset or the usual defaults.
Files older than timm 0.9 use the official names and are read by the ``official`` layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts.common import DROPPED_BUFFERS, rename

NAME = "timm"

_RULES = [
    (r"layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample."),
    (r"head\.fc\.", "head."),
]


def detect(state_dict: Mapping[str, Any]) -> float:
    """1.0 for timm files: official-style blocks with merging at stage starts, or a ``head.fc``."""
    keys = set(state_dict)
    if "patch_embed.proj.weight" not in keys or "layers.0.blocks.0.attn.qkv.weight" not in keys:
        return 0.0
    merge_at_start = any(k.startswith("layers.1.downsample.") for k in keys) and not any(
        k.startswith("layers.0.downsample.") for k in keys
    )
    return 1.0 if merge_at_start or "head.fc.weight" in keys else 0.0


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names to canonical names (merging moved to the end of the previous stage, ``head.fc`` to ``head``)."""
    out = {}
    for name, tensor in state_dict.items():
        if DROPPED_BUFFERS.search(name):
            continue
        if re.match(r"layers\.0\.downsample\.", name):
            raise ValueError(f"{name}: timm stage 0 has no patch merging; this is not a timm checkpoint")
        out[rename(name, _RULES)] = tensor
    return out

"""The torchvision layout (``torchvision.models.swin_t/s/b`` and ``swin_v2_t/s/b``).

Followed: pytorch/vision ``torchvision/models/swin_transformer.py`` at b3054b4d (the version with
``PatchMergingV2``, ``downsample_layer`` and ``Swin_V2_*_Weights``) and ``torchvision.ops.misc.MLP``. The model is one ``features`` sequence:

* ``features.0`` = [Conv2d, Permute, LayerNorm] (``features.0.0`` conv, ``features.0.2`` norm);
* stage i's blocks are ``features.{2i+1}.{j}``, its patch merging ``features.{2i+2}`` (same 2x2 order
  as the official code; v2 ``PatchMergingV2`` normalises after the reduction, as canonical v2);
* the MLP is a ``torchvision.ops.misc.MLP`` Sequential: ``mlp.0`` (fc1) and ``mlp.3`` (fc2);
* v2 keeps a full ``qkv.bias`` whose key third is zeroed at every forward (never used): it is split into
  canonical ``q_bias``/``v_bias`` and the key part is discarded;
* ``relative_position_index`` (flattened) and v2 ``relative_coords_table`` are persistent buffers here;
  they are dropped, and the index gives the window size. torchvision v2 has no pretrained window
  sizes (coordinates are normalised by the window itself), which canonical
  ``pretrained_window_sizes=0`` reproduces.

torchvision's run-time geometry differs from transformers' on small or odd maps: it never shrinks a
window, drops the shift only along an axis whose padded map is a single window, shifts every stage by
half the window (v2 too), and its stem convolution drops the image rows and columns past the last whole
patch. :data:`CONFIG_FIELDS` records these rules in the config of every checkpoint read in this layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts.common import DROPPED_BUFFERS, rename, window_from_index

NAME = "torchvision"

# SwinConfig fields that make the canonical model run torchvision's geometry at every input size
CONFIG_FIELDS: dict[str, Any] = {"shift_rule": "torchvision", "patch_padding": False}

_BLOCK = re.compile(r"features\.(\d+)\.(\d+)\.(.+)$")
_MERGE = re.compile(r"features\.(\d+)\.(reduction|norm)\.(weight|bias)$")
_STEM_RULES = [(r"features\.0\.0\.", "patch_embed.proj."), (r"features\.0\.2\.", "patch_embed.norm.")]
_BLOCK_RULES = [
    (r"mlp\.0\.", "mlp.fc1."),
    (r"mlp\.3\.", "mlp.fc2."),
]


def detect(state_dict: Mapping[str, Any]) -> float:
    markers = ("features.0.0.weight", "features.1.0.attn.qkv.weight")
    return 1.0 if all(m in state_dict for m in markers) else 0.0


def window_size_hint(state_dict: Mapping[str, Any]) -> int | None:
    """The window, from the first block's persistent relative position index."""
    return window_from_index(state_dict.get("features.1.0.attn.relative_position_index"))


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision names to canonical names; v2 ``qkv.bias`` split into ``q_bias``/``v_bias``."""
    v2 = any(k.endswith("attn.logit_scale") for k in state_dict)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if DROPPED_BUFFERS.search(name):
            continue
        if name.startswith("features.0."):
            out[rename(name, _STEM_RULES)] = tensor
        elif m := _MERGE.match(name):
            position = int(m.group(1))
            if position % 2 or position == 0:
                raise ValueError(f"{name}: patch merging must sit at an even features index")
            out[f"layers.{position // 2 - 1}.downsample.{m.group(2)}.{m.group(3)}"] = tensor
        elif m := _BLOCK.match(name):
            position, block, rest = int(m.group(1)), m.group(2), m.group(3)
            prefix = f"layers.{(position - 1) // 2}.blocks.{block}."
            if v2 and rest == "attn.qkv.bias":
                q_bias, _unused_key_bias, v_bias = tensor.chunk(3)
                out[prefix + "attn.q_bias"], out[prefix + "attn.v_bias"] = q_bias, v_bias
            else:
                out[prefix + rename(rest, _BLOCK_RULES)] = tensor
        else:
            out[name] = tensor  # norm.*, head.*
    return out

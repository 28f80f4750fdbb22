"""The official microsoft/Swin-Transformer layout (v1, v2 and SimMIM encoders): the canonical names.

Files hold ``{'model': state_dict, ...}`` (or the bare state dict). Persistent buffers
(``relative_position_index``, ``attn_mask``, ``relative_coords_table``) are dropped: the model rebuilds
them. SimMIM pre-training checkpoints prefix the encoder with ``encoder.`` and carry a ``decoder.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts.common import pretrained_windows_hint

NAME = "official"

_DROPPED = re.compile(r"(relative_position_index|relative_coords_table|attn_mask)$")
_MARKERS = ("layers.0.blocks.0.attn.qkv.weight", "patch_embed.proj.weight")


def detect(state_dict: Mapping[str, Any]) -> float:
    keys = set(state_dict)
    plain = all(m in keys for m in _MARKERS)
    simmim = all("encoder." + m in keys for m in _MARKERS)
    has_merge_at_end = any(re.match(r"(encoder\.)?layers\.0\.downsample\.", k) for k in keys)
    if (plain or simmim) and (has_merge_at_end or not any(".downsample." in k for k in keys)):
        return 0.9
    return 0.0


def window_size_hint(state_dict: Mapping[str, Any]) -> int | None:
    """The stage-1 window, from the relative position index buffer that official files keep."""
    for prefix in ("", "encoder."):
        index = state_dict.get(prefix + "layers.0.blocks.0.attn.relative_position_index")
        if index is not None:
            return round(index.shape[0] ** 0.5)
    return None


def pretrained_window_sizes_hint(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None:
    """v2: each stage's pretrained window, from the coordinate tables official files keep."""
    return pretrained_windows_hint(
        state_dict, r"(?:encoder\.)?layers\.(\d+)\.blocks\.0\.attn\.relative_coords_table"
    )


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    simmim = "encoder.patch_embed.proj.weight" in state_dict
    for name, tensor in state_dict.items():
        if simmim:
            if not name.startswith("encoder."):
                continue  # the SimMIM decoder is not part of the encoder
            name = name[len("encoder.") :]
        if _DROPPED.search(name):
            continue
        out[name] = tensor
    return out


def mim_to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SimMIM checkpoint (``encoder.*`` with ``encoder.mask_token``, ``decoder.0.*``) to canonical
    MIM names, which are the same names without the buffers the model rebuilds."""
    if "encoder.patch_embed.proj.weight" not in state_dict or "decoder.0.weight" not in state_dict:
        raise ValueError(
            "not an official SimMIM checkpoint: it needs encoder.patch_embed and decoder.0 tensors"
        )
    unknown = [k for k in state_dict if not k.startswith(("encoder.", "decoder."))]
    if unknown:
        raise ValueError(f"{unknown[0]}: neither an encoder nor a decoder tensor of a SimMIM checkpoint")
    return {k: v for k, v in state_dict.items() if not _DROPPED.search(k)}


def mim_from_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical MIM names to an official SimMIM state dict (the file holds ``{"model": this}``)."""
    return dict(state_dict)

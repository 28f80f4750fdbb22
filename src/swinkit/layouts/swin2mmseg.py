"""mmsegmentation's ``tools/model_converters/swin2mmseg.py`` (``convert_swin``), key for key, and its inverse.

An official microsoft/Swin-Transformer state dict becomes the backbone file mmseg configs name as
``pretrained``: ``head.*`` dropped; ``layers.{i}`` -> ``stages.{i}``; ``attn.`` -> ``attn.w_msa.``;
``mlp.fc1.`` -> ``ffn.layers.0.0.``, ``mlp.fc2.`` -> ``ffn.layers.1.``; ``patch_embed.proj`` ->
``patch_embed.projection``; PatchMerging's reduction columns and 4C norm reordered from the official 2x2
concatenation into ``nn.Unfold``'s channel order; every other key (the final ``norm``, buffers such as
``relative_position_index`` and ``attn_mask``) kept as it is. The script saves the bare dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from swinkit.layouts.heads.mmseg import official_to_unfold
from swinkit.layouts.mmlab import unfold_to_official

_FORWARD_MLP = (("mlp.fc1.", "ffn.layers.0.0."), ("mlp.fc2.", "ffn.layers.1."), ("mlp.", "ffn."))


def _official_layer_key(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """One ``layers.*`` entry under its mmseg name (``convert_swin``'s ``k.startswith('layers')`` branch)."""
    new_key, new_tensor = key, tensor
    if "attn." in key:
        new_key = key.replace("attn.", "attn.w_msa.")
    elif "mlp." in key:
        source, target = next((s, t) for s, t in _FORWARD_MLP if s in key)
        new_key = key.replace(source, target)
    elif "downsample" in key and ("reduction." in key or "norm." in key):
        new_tensor = official_to_unfold(tensor)  # correct_unfold_reduction_order / correct_unfold_norm_order
    return new_key.replace("layers", "stages", 1), new_tensor


def official_to_mmseg(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``convert_swin(ckpt)``: an official Swin state dict in mmseg backbone names, in the same key order."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("head"):
            continue
        if key.startswith("layers"):
            key, tensor = _official_layer_key(key, tensor)
        elif key.startswith("patch_embed") and "proj" in key:
            key = key.replace("proj", "projection")
        out[key] = tensor
    return out


def _mmseg_stage_key(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """One ``stages.*`` entry under its official name: the inverse of :func:`_official_layer_key`."""
    new_key, new_tensor = key.replace("stages", "layers", 1), tensor
    if "attn.w_msa." in key:
        new_key = new_key.replace("attn.w_msa.", "attn.")
    elif "ffn." in key:
        target, source = next((t, s) for t, s in _FORWARD_MLP if s in key)
        new_key = new_key.replace(source, target)
    elif "downsample" in key and ("reduction." in key or "norm." in key):
        new_tensor = unfold_to_official(tensor)
    return new_key, new_tensor


def mmseg_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A file ``swin2mmseg.py`` wrote, back in official names (without the head the converter dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("stages"):
            key, tensor = _mmseg_stage_key(key, tensor)
        elif key.startswith("patch_embed") and "projection" in key:
            key = key.replace("projection", "proj")
        out[key] = tensor
    return out

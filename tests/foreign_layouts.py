"""Test helpers: tiny random transformers Swin models and their weights written in foreign layouts.

The writers here are independent of ``swinkit.layouts``: each follows the named library's source
(module names, merging placement, nn.Unfold channel order, torchvision's MLP indices, ...), going from
canonical names (obtained through the HF layout, which is exact) to that library's names.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from swinkit.layouts import hf

# Three stages at 64 px with window 4: maps 16, 8, 4, so stages 0-1 shift and every merge is exercised;
# 64 is also the size swinkit infers for window 4 when nothing else tells it.
IMAGE, WINDOW, EMBED, DEPTHS, HEADS, CLASSES = 64, 4, 32, [2, 2, 2], [2, 4, 8], 5
# The ``swinv2_micro`` preset's architecture, for layouts whose v2 files do not tell the window (timm).
MICRO = dict(depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
UNFOLD_ORDER = [0, 2, 1, 3]  # official slot k' <-> nn.Unfold kernel position (self-inverse)


def hf_model(version: int, micro: bool = False, pretrained: list[int] | None = None) -> torch.nn.Module:
    """A tiny random transformers Swin(v2)ForImageClassification, every parameter perturbed away from init.

    ``pretrained``: v2 pretrained window sizes (default 0 for every stage).
    """
    common = dict(embed_dim=EMBED, depths=DEPTHS, num_heads=HEADS, image_size=IMAGE, window_size=WINDOW)
    common.update(MICRO if micro else {}, num_labels=CLASSES)
    if version == 1:
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**common))
    else:
        pretrained = pretrained or [0] * len(common["depths"])
        config = transformers.Swinv2Config(pretrained_window_sizes=pretrained, **common)
        model = transformers.Swinv2ForImageClassification(config)
    generator = torch.Generator().manual_seed(version)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def canonical(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under canonical names, read from what ``save_pretrained`` writes (on-disk names)."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return hf.to_canonical(load_file(str(Path(folder) / "model.safetensors")))


def relative_position_index(window: int) -> torch.Tensor:
    """The official (ws*ws, ws*ws) index buffer."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def relative_coords_table(window: int, pretrained: int) -> torch.Tensor:
    """The official v2 (1, 2ws-1, 2ws-1, 2) log-spaced coordinates, normalised by the pretrained window."""
    span = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / ((pretrained if pretrained > 0 else window) - 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def _buffers(key: str, pretrained: list[int] | None) -> dict[str, torch.Tensor]:
    """The index (and v2 coordinate) buffers official/OpenMMLab blocks persist, named after ``key``'s block."""
    if key.endswith("attn.proj.weight"):
        return {"relative_position_index": relative_position_index(WINDOW)}
    if key.endswith("attn.logit_scale"):
        stage = int(re.match(r"layers\.(\d+)\.", key).group(1))
        return {"relative_coords_table": relative_coords_table(WINDOW, (pretrained or [0] * 4)[stage])}
    return {}


def official_to_unfold(tensor: torch.Tensor) -> torch.Tensor:
    """mmseg's ``correct_unfold_reduction_order`` / ``correct_unfold_norm_order`` on the last dimension."""
    *lead, four_c = tensor.shape
    x = tensor.reshape(*lead, 4, four_c // 4)[..., UNFOLD_ORDER, :]
    return x.transpose(-1, -2).reshape(*lead, four_c)


def to_official(sd: dict[str, torch.Tensor], pretrained: list[int] | None = None) -> dict:
    """microsoft/Swin-Transformer: canonical names plus the persistent buffers, inside ``{'model': ...}``."""
    out = dict(sd)
    for key in sd:
        block = key.rsplit(".", 2)[0] if key.endswith("proj.weight") else key.rsplit(".", 1)[0]
        out.update({f"{block}.{name}": value for name, value in _buffers(key, pretrained).items()})
    return {"model": out, "epoch": 3}


def to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm >= 0.9: merging at the start of the next stage, ``head.fc``."""
    out = {}
    for key, value in sd.items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key
        )
        out[re.sub(r"^head\.", "head.fc.", key)] = value
    return out


def to_torchvision(sd: dict[str, torch.Tensor], key_bias: float = 0.0) -> dict[str, torch.Tensor]:
    """torchvision: one ``features`` Sequential; v2 ``qkv.bias`` gets a key third filled with ``key_bias``."""
    out = {}
    for key, value in sd.items():
        if key.startswith("patch_embed."):
            out[
                key.replace("patch_embed.proj.", "features.0.0.").replace(
                    "patch_embed.norm.", "features.0.2."
                )
            ] = value
        elif m := re.match(r"layers\.(\d+)\.downsample\.(.+)", key):
            out[f"features.{2 * int(m.group(1)) + 2}.{m.group(2)}"] = value
        elif m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key):
            prefix = f"features.{2 * int(m.group(1)) + 1}.{m.group(2)}."
            rest = m.group(3).replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
            if rest == "attn.q_bias":
                v_bias = sd[key.replace("q_bias", "v_bias")]
                out[prefix + "attn.qkv.bias"] = torch.cat([value, torch.full_like(value, key_bias), v_bias])
            elif rest != "attn.v_bias":
                out[prefix + rest] = value
            if rest == "attn.proj.weight":
                out[prefix + "attn.relative_position_index"] = relative_position_index(WINDOW).flatten()
        else:
            out[key] = value
    return out


def to_mmlab(
    sd: dict[str, torch.Tensor],
    *,
    merge_at_start: bool,
    classifier: bool,
    pretrained: list[int] | None = None,
    stage_norms: bool | None = None,
) -> dict[str, torch.Tensor]:
    """OpenMMLab ``backbone.``-prefixed names; mmseg/mmdet/mmcls v1 merge at stage ends, mmpretrain v2 at starts.

    A classifier keeps ``norm{last}`` + ``head.fc``; a backbone (or ``stage_norms``: a classifier built with
    every ``out_indices``) gets ``norm{i}`` for every stage (the last one the classifier's final norm, the
    others random), and a segmentor's ``decode_head``.
    """
    last = len(DEPTHS) - 1
    out = {}
    for key, value in sd.items():
        if m := re.match(r"layers\.(\d+)\.downsample\.(reduction|norm)\.(.+)", key):
            stage = int(m.group(1)) + (1 if merge_at_start else 0)
            if m.group(2) == "reduction" or value.shape[0] == 4 * EMBED * 2 ** int(m.group(1)):
                value = official_to_unfold(value)
            out[f"backbone.stages.{stage}.downsample.{m.group(2)}.{m.group(3)}"] = value
        elif m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key):
            rest = m.group(3).replace("attn.", "attn.w_msa.")
            rest = rest.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
            out[f"backbone.stages.{m.group(1)}.blocks.{m.group(2)}.{rest}"] = value
            for name, buffer in _buffers(key, pretrained).items():
                out[f"backbone.stages.{m.group(1)}.blocks.{m.group(2)}.attn.w_msa.{name}"] = buffer
        elif key.startswith("patch_embed."):
            out["backbone." + key.replace("patch_embed.proj.", "patch_embed.projection.")] = value
        elif key.startswith("norm."):
            out[f"backbone.norm{last}." + key[len("norm.") :]] = value
        elif key.startswith("head.") and classifier:
            out["head.fc." + key[len("head.") :]] = value
    if not classifier or stage_norms:
        generator = torch.Generator().manual_seed(7)
        for stage in range(last):
            width = EMBED * 2**stage
            out[f"backbone.norm{stage}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
            out[f"backbone.norm{stage}.bias"] = 0.1 * torch.randn(width, generator=generator)
        if not classifier:
            out["decode_head.conv_seg.weight"] = torch.randn(3, 8, 1, 1, generator=generator)
    return out

"""Helpers shared by the layout modules: regex renaming, dropped buffers, and inferring the architecture from shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import torch

from swinkit.presets import SwinConfig

Rule = tuple[str, str | Callable[[re.Match], str]]


def rename(name: str, rules: Sequence[Rule]) -> str:
    """Apply the first rule whose pattern matches ``name`` (searching from the start); unchanged otherwise."""
    for pattern, replacement in rules:
        new, count = re.subn("^" + pattern.lstrip("^"), replacement, name, count=1)
        if count:
            return new
    return name


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Remove the first of ``prefixes`` that every key carrying any of them starts with."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    return dict(state_dict)


def default_image_size(version: int, window_size: int, patch_size: int, num_stages: int) -> int:
    """The official native size for a window (7 -> 224, 8 -> 256, 12 -> 384 (v1) or 192 (v2), 16 -> 256,
    24 -> 384); for other windows the size whose last stage is exactly one window."""
    defaults = {7: 224, 8: 256, 12: 384 if version == 1 else 192, 16: 256, 24: 384}
    return defaults.get(window_size, window_size * patch_size * 2 ** (num_stages - 1))


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    base: SwinConfig | None = None,
    window_size: int | None = None,
    pretrained_window_sizes: Sequence[int] | None = None,
) -> SwinConfig:
    """The trunk's architecture of a canonical state dict, read from its tensor shapes (the head's classes
    are ``head.weight``'s rows).

    Fields that shapes cannot tell (native image size, pretrained window sizes, drop rates) come from
    ``base`` when given, otherwise from the usual defaults (:func:`default_image_size`). v2 tensors do not
    tell the window: ``window_size`` (e.g. read from a layout's index buffer) gives it, else 8;
    ``pretrained_window_sizes`` (e.g. read from coordinate tables) default to 0 (each stage's own window).
    """
    sd = state_dict
    if "patch_embed.proj.weight" not in sd:
        raise ValueError("cannot infer the architecture: no patch embedding weight (patch_embed.proj.weight)")
    embed_dim, in_channels, patch_size, _ = sd["patch_embed.proj.weight"].shape
    stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.blocks\.", k))})
    depths = tuple(
        1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.", k)))
        for i in stages
    )
    version = 2 if any(k.endswith("attn.logit_scale") for k in sd) else 1
    num_heads, windows = [], []
    for i in stages:
        if version == 1:
            table = sd[f"layers.{i}.blocks.0.attn.relative_position_bias_table"]
            num_heads.append(table.shape[1])
            windows.append((math.isqrt(table.shape[0]) + 1) // 2)
        else:
            num_heads.append(sd[f"layers.{i}.blocks.0.attn.logit_scale"].shape[0])
    hidden = sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0]
    qkv_bias = "layers.0.blocks.0.attn.qkv.bias" in sd or "layers.0.blocks.0.attn.q_bias" in sd
    if base is not None:
        window_size, image_size, pretrained = base.window_size, base.image_size, base.pretrained_window_sizes
    else:
        window_size = window_size or (windows[0] if windows else 8)
        image_size = _native_size(sd, windows, patch_size) or default_image_size(
            version, window_size, patch_size, len(stages)
        )
        pretrained = tuple(pretrained_window_sizes) if pretrained_window_sizes else (0,) * len(stages)
    values = dict(base.to_dict()) if base is not None else {}
    values.update(
        version=version,
        image_size=image_size,
        patch_size=patch_size,
        in_channels=in_channels,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(num_heads),
        window_size=window_size,
        pretrained_window_sizes=tuple(pretrained),
        mlp_ratio=hidden / embed_dim,
        qkv_bias=qkv_bias,
        absolute_pos_embed="absolute_pos_embed" in sd,
        patch_norm="patch_embed.norm.weight" in sd,
    )
    return SwinConfig.from_dict(values)


def _native_size(sd: Mapping[str, torch.Tensor], windows: Sequence[int], patch_size: int) -> int | None:
    """The native image size where the tensors tell it: an absolute position embedding's grid, or the
    first v1 stage whose table is smaller than stage 0's (the official rule shrank it to the map size)."""
    pos = sd.get("absolute_pos_embed")
    if pos is not None:
        grid = math.isqrt(pos.shape[1]) if pos.ndim == 3 else pos.shape[1]
        return grid * patch_size
    for stage, window in enumerate(windows):
        if window < windows[0]:
            return window * patch_size * 2**stage
    return None


# Buffers some layouts persist that the canonical model rebuilds from its config.
DROPPED_BUFFERS = re.compile(
    r"(relative_position_index|relative_coords_table|attn_mask|k_bias|num_batches_tracked)$"
)


def window_from_index(index: torch.Tensor | None) -> int | None:
    """The window side of a ``relative_position_index`` buffer ((N, N) or flattened N*N, N = ws*ws)."""
    if index is None:
        return None
    return round(index.numel() ** 0.25)


def pretrained_window_from_coords(table: torch.Tensor) -> int:
    """The pretrained window a v2 ``relative_coords_table`` (1, 2ws-1, 2ws-1, 2) was normalised by.

    The official table holds sign(c) * log2(|c| + 1) / 3 with c = 8 * d / (p - 1) for offsets d up to
    ws - 1; the largest entry gives p. Returns 0 when p is the table's own window (the default).
    """
    window = (table.shape[1] + 1) // 2
    if window < 2:
        return 0
    span = 2 ** (3 * float(table.abs().max())) - 1  # 8 * (ws - 1) / (p - 1)
    pretrained = round(8 * (window - 1) / span) + 1
    return 0 if pretrained == window else pretrained


def pretrained_windows_hint(state_dict: Mapping[str, torch.Tensor], pattern: str) -> tuple[int, ...] | None:
    """Per-stage pretrained windows from the coordinate tables whose names match ``pattern`` (group 1: stage)."""
    tables = {int(m.group(1)): v for k, v in state_dict.items() if (m := re.fullmatch(pattern, k))}
    if not tables or sorted(tables) != list(range(len(tables))):
        return None
    return tuple(pretrained_window_from_coords(tables[i]) for i in range(len(tables)))

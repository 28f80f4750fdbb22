"""Swin building blocks: patch embedding, Swin block (v1 pre-norm / v2 res-post-norm), patch merging, stage.

Every module here works on channels-last maps (B, H, W, C) of any size: maps are padded to window
(or patch, or 2x2) multiples where needed and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinkit.layers.attention import WindowAttention
from swinkit.layers.window import (
    Size,
    is_unshifted,
    static_size,
    window_gather_index,
    window_partition,
    window_reverse,
    window_scatter_index,
)
from swinkit.presets import ShiftRule


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``rate`` and rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: (B, C_in, H, W) image to (B, H/p, W/p, C) tokens.

    With ``padding`` the image is zero-padded to patch multiples (ceil(H/p) rows of tokens); without it the
    remainder rows and columns are dropped (floor(H/p), torchvision's plain strided convolution).
    """

    def __init__(
        self, patch_size: int, in_channels: int, embed_dim: int, norm: bool, eps: float, padding: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.padding = padding
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=eps) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = static_size(x.shape[-2]), static_size(x.shape[-1])  # the model's geometry is per image size
        pad_h, pad_w = (-H) % self.patch_size, (-W) % self.patch_size
        if self.padding and (torch.jit.is_tracing() or pad_h or pad_w):  # traced: padding is size arithmetic
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # a channels-last input makes the convolution write (B, H/p, W/p, C) directly: the permute is a view
        x = self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class PatchMerging(nn.Module):
    """2x2 neighbour concatenation and linear reduction: (B, H, W, C) to (B, ceil(H/2), ceil(W/2), 2C).

    v1 normalises the 4C concatenation before the reduction; v2 normalises the 2C result after it.
    """

    def __init__(self, dim: int, version: int, eps: float) -> None:
        super().__init__()
        self.version = version
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim if version == 1 else 2 * dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        if torch.jit.is_tracing() or H % 2 or W % 2:  # traced: the padding (maybe 0) is size arithmetic
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # the official order: (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        if self.version == 1:
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))


class SwinBlock(nn.Module):
    """(Shifted) window attention and MLP, each in a residual branch.

    v1: x + attn(norm1(x)), then x + mlp(norm2(x)). v2 (res-post-norm): x + norm1(attn(x)), then x + norm2(mlp(x)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        *,
        version: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path_rate: float = 0.0,
        pretrained_window_size: int = 0,
        eps: float = 1e-5,
        always_shift: bool = False,
        shift_rule: ShiftRule = "transformers",
    ) -> None:
        super().__init__()
        self.version = version
        self.window_size = window_size
        self.shift_size = shift_size
        self.always_shift = (
            always_shift  # shift even along axes that hold a single window (detection backbones)
        )
        self.shift_rule = shift_rule  # which axes lose the shift on small maps: see _geometry
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(
            dim,
            num_heads,
            window_size,
            version=version,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            pretrained_window_size=pretrained_window_size,
        )
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def _geometry(self, height: Size, width: Size) -> tuple[tuple[Size, Size], tuple[Size, Size]]:
        """(padded size, (vertical, horizontal) shift) of a height x width map, padded to window multiples.

        Unless ``always_shift``: the transformers rule drops the shift on both axes when either padded axis
        is a single window; the torchvision rule drops it only along such an axis. Under the TorchScript
        tracer sizes are 0-dim tensors and so is a shift that depends on them (``_traced_shift``).
        """
        ws, height, width = self.window_size, static_size(height), static_size(width)
        padded = (height + (-height) % ws, width + (-width) % ws)
        if self.always_shift or self.shift_size == 0:
            return padded, (self.shift_size, self.shift_size)
        if torch.jit.is_tracing():
            return padded, self._traced_shift(padded)
        if self.shift_rule == "torchvision":
            return padded, (
                self.shift_size if padded[0] > ws else 0,
                self.shift_size if padded[1] > ws else 0,
            )
        return padded, (self.shift_size, self.shift_size) if min(padded) > ws else (0, 0)

    def _traced_shift(self, padded: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_geometry`'s shift rule as tensor arithmetic on traced padded sizes (0 where it drops)."""
        ws, shift = self.window_size, self.shift_size
        if self.shift_rule == "torchvision":
            return shift * (padded[0] > ws).long(), shift * (padded[1] > ws).long()
        both = shift * (torch.minimum(padded[0], padded[1]) > ws).long()
        return both, both

    def partition(self, x: torch.Tensor, padded: tuple[Size, Size], shift: tuple[Size, Size]) -> torch.Tensor:
        """Pad, cyclically shift by -shift and cut (B, H, W, C) into (B, nW, ws*ws, C) windows (one copy)."""
        B, H, W, C = x.shape
        if torch.jit.is_tracing() or padded != (H, W):  # traced: the padding (maybe 0) is size arithmetic
            x = F.pad(x, (0, 0, 0, padded[1] - W, 0, padded[0] - H))
        if is_unshifted(shift):
            return window_partition(x, self.window_size)
        index = window_gather_index(padded, self.window_size, shift, x.device)
        num_windows = (padded[0] // self.window_size) * (padded[1] // self.window_size)
        flat = x.reshape(B, padded[0] * padded[1], C)  # sizes spelled out: B may be 0
        return flat.index_select(1, index).view(B, num_windows, self.window_size**2, C)

    def merge(
        self,
        windows: torch.Tensor,
        size: tuple[Size, Size],
        padded: tuple[Size, Size],
        shift: tuple[Size, Size],
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inverse of :func:`partition` (window reverse, roll back, crop), added to ``residual`` if given.

        windows: (B, nW, ws*ws, C); returns (B, H, W, C). Without shift or padding the windows are added
        to the residual through a strided view, so the reverse costs no copy of its own.
        """
        B, C = windows.shape[0], windows.shape[-1]
        (H, W), ws = size, self.window_size
        if torch.jit.is_tracing() and is_unshifted(shift):  # traced: reverse the padded map, then crop
            x = window_reverse(windows, ws, padded[0], padded[1])[:, :H, :W]
            return x if residual is None else residual + x
        if is_unshifted(shift) and padded == size:
            if residual is None:
                return window_reverse(windows, ws, H, W)
            tiles = windows.view(B, H // ws, W // ws, ws, ws, C)
            tiles = tiles.permute(0, 1, 3, 2, 4, 5)  # (B, nWh, ws, nWw, ws, C), a strided view
            return (residual.reshape(B, H // ws, ws, W // ws, ws, C) + tiles).view(B, H, W, C)
        index = window_scatter_index(size, padded, ws, shift, windows.device)
        x = windows.reshape(B, padded[0] * padded[1], C).index_select(1, index).view(B, H, W, C)
        return x if residual is None else residual + x

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to window multiples, cyclically shift, attend per window, undo both. (B, H, W, C) in and out."""
        size = (x.shape[1], x.shape[2])
        padded, shift = self._geometry(*size)
        windows = self.attn(self.partition(x, padded, shift), padded, shift)
        return self.merge(windows, size, padded, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[1], x.shape[2])
        padded, shift = self._geometry(*size)
        if self.version == 1:
            windows = self.attn(self.partition(self.norm1(x), padded, shift), padded, shift)
        else:  # norm1 is per token, so it commutes with the window layout
            windows = self.norm1(self.attn(self.partition(x, padded, shift), padded, shift))
        x = self.merge(self.drop_path(windows), size, padded, shift, residual=x)
        if self.version == 1:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class SwinStage(nn.Module):
    """A sequence of Swin blocks (even ones unshifted, odd ones shifted), then optional patch merging."""

    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) to (output before merging (B, H, W, C), output after merging)."""
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        merged = self.downsample(x) if self.downsample is not None else x
        return x, merged

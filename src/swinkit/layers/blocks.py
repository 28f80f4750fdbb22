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
from swinkit.layers.window import window_partition, window_reverse


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
    """Non-overlapping ``patch_size`` convolution: (B, C_in, H, W) image to (B, H/p, W/p, C) tokens."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int, norm: bool, eps: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=eps) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % self.patch_size, (-W) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, H/p, W/p, C)
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
        if H % 2 or W % 2:
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
    ) -> None:
        super().__init__()
        self.version = version
        self.window_size = window_size
        self.shift_size = shift_size
        self.always_shift = (
            always_shift  # shift even along axes that hold a single window (detection backbones)
        )
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

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to window multiples, cyclically shift, attend per window, undo both. (B, H, W, C) in and out."""
        B, H, W, C = x.shape
        ws = self.window_size
        pad_h, pad_w = (-H) % ws, (-W) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        # no shift along an axis that holds a single window (torchvision's rule), unless always_shift
        shift = (
            self.shift_size if Hp > ws or self.always_shift else 0,
            self.shift_size if Wp > ws or self.always_shift else 0,
        )
        if shift != (0, 0):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x, ws)  # (B, nW, ws*ws, C)
        windows = self.attn(windows, (Hp, Wp), shift)
        x = window_reverse(windows, ws, Hp, Wp)  # (B, Hp, Wp, C)
        if shift != (0, 0):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        if pad_h or pad_w:
            x = x[:, :H, :W].contiguous()
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.version == 1:
            x = x + self.drop_path(self.window_attention(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.norm1(self.window_attention(x)))
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

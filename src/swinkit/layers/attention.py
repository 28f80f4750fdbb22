"""Window multi-head self-attention for Swin v1 (relative position bias) and v2 (cosine attention + CPB).

Attention runs through ``F.scaled_dot_product_attention`` on 4-D tensors (the fused CPU path). The
additive bias (position bias, plus the shift mask where there is one) is a function of parameters only,
so outside autograd it is built once per (mask, dtype, device) and reused until the parameters change.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.layers.window import cached_shift_mask, log_spaced_coords_table, relative_position_index

# v2 clamps the learned temperature at log(1 / 0.01): logits are scaled by at most 100.
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
# How many (padded size, dtype, device) bias tensors one attention module keeps.
BIAS_CACHE_SIZE = 8


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of ``window_size`` x ``window_size`` tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        *,
        version: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pretrained_window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.version = version
        self.attn_drop = attn_drop
        n = window_size * window_size
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size).view(n * n), False
        )
        if version == 1:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) ** 2, num_heads)
            )
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False)
            )
            table = log_spaced_coords_table(window_size, pretrained_window_size)
            self.register_buffer("relative_coords_table", table, persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def train(self, mode: bool = True) -> WindowAttention:
        self._bias_cache.clear()  # also drops biases made stale by edits through ``param.data``
        return super().train(mode)

    def position_bias(self) -> torch.Tensor:
        """(nH, N, N) additive relative position bias, N = ws*ws (differentiable)."""
        n = self.window_size * self.window_size
        if self.version == 1:
            table = self.relative_position_bias_table
        else:
            table = 16 * torch.sigmoid(
                self.cpb_mlp(self.relative_coords_table.to(self.cpb_mlp[0].weight.dtype))
            )
        bias = table[self.relative_position_index].view(n, n, self.num_heads)
        return bias.permute(2, 0, 1)  # (nH, N, N)

    def _bias_parameters(self) -> list[torch.Tensor]:
        if self.version == 1:
            return [self.relative_position_bias_table]
        return [self.cpb_mlp[0].weight, self.cpb_mlp[0].bias, self.cpb_mlp[2].weight]

    def attention_bias(
        self, padded_size: tuple[int, int], shift: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """The additive mask handed to SDPA for a padded map of ``padded_size`` shifted by ``shift``.

        Without a shift: (1, nH, N, N), for queries laid out as (B*nW, nH, N, hd).
        With a shift: (1, nW*nH, N, N), for queries laid out as (B, nW*nH, N, hd).
        """
        params = self._bias_parameters()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self._build_bias(padded_size, shift, dtype, device)
        key = (padded_size, shift, dtype, device, tuple((p.data_ptr(), p._version) for p in params))
        cached = self._bias_cache.get(key)
        if cached is None:
            cached = self._build_bias(padded_size, shift, dtype, device)
            self._bias_cache[key] = cached
            if len(self._bias_cache) > BIAS_CACHE_SIZE:
                self._bias_cache.popitem(last=False)
        else:
            self._bias_cache.move_to_end(key)
        return cached

    def _build_bias(
        self, padded_size: tuple[int, int], shift: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        bias = self.position_bias()  # (nH, N, N)
        if shift == (0, 0):
            return bias.unsqueeze(0).to(dtype)
        n = bias.shape[-1]
        shift_mask = cached_shift_mask(padded_size, self.window_size, shift, device)  # (nW, N, N)
        combined = bias.unsqueeze(0) + shift_mask.unsqueeze(1).to(bias.dtype)  # (nW, nH, N, N)
        return combined.reshape(1, -1, n, n).to(dtype)

    def _qkv_bias(self) -> torch.Tensor | None:
        if self.version == 1 or self.q_bias is None:
            return self.qkv.bias
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(
        self, windows: torch.Tensor, padded_size: tuple[int, int], shift: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Attend within each window.

        windows: (B, nW, N, C) tokens of every window of a (possibly cyclically shifted) map of
        ``padded_size``; ``shift`` is the (vertical, horizontal) cyclic shift applied to it.
        Returns (B, nW, N, C).
        """
        B, nW, N, C = windows.shape
        qkv = F.linear(windows, self.qkv.weight, self._qkv_bias())  # (B, nW, N, 3C)
        qkv = qkv.view(B, nW, N, 3, self.num_heads, self.head_dim).permute(
            3, 0, 1, 4, 2, 5
        )  # (3, B, nW, nH, N, hd)
        q, k, v = qkv.unbind(0)
        scale = None
        if self.version == 2:
            logit_scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (nH, 1, 1)
            q = F.normalize(q, dim=-1) * logit_scale
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if shift == (0, 0):
            shape = (B * nW, self.num_heads, N, self.head_dim)
        else:
            shape = (B, nW * self.num_heads, N, self.head_dim)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        bias = self.attention_bias(padded_size, shift, q.dtype, q.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0, scale=scale
        )
        out = out.view(B, nW, self.num_heads, N, self.head_dim).transpose(2, 3).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, version={self.version}"

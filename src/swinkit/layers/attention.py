"""Window multi-head self-attention for Swin v1 (relative position bias) and v2 (cosine attention + CPB).

Every projection is called as a module (``self.qkv(x)``, ``self.proj(x)``, ``self.cpb_mlp(table)``), never
through its weight, so tools that swap or wrap ``nn.Linear`` (``quantize_dynamic``, PEFT LoRA) see them all.
Attention runs through ``F.scaled_dot_product_attention`` on 4-D (B*nW, nH, N, hd) views of the qkv
projection (the fused CPU path, no copies). The additive bias (position bias, plus the shift mask where
there is one) is a function of parameters only, so outside autograd it is built once per (padded size,
shift, dtype, device) and reused until the parameters change; so are v2's qkv bias and temperature.
Under ``torch.compile`` they are built inside the graph instead (the cache is Python state).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.layers.window import (
    Size,
    cached_shift_mask,
    is_unshifted,
    log_spaced_coords_table,
    relative_position_index,
)

# v2 clamps the learned temperature at log(1 / 0.01): logits are scaled by at most 100.
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
# How many parameter-derived tensors (biases per padded size, dtype, device; v2 constants) a module keeps.
BIAS_CACHE_SIZE = 8


def _version(parameter: torch.Tensor) -> int:
    """The tensor's in-place version counter; -1 for an inference tensor, which has none (weights made under
    ``torch.inference_mode``, e.g. bf16 copies made for inference, and never trained in place)."""
    return -1 if parameter.is_inference() else parameter._version


def _evict_oldest(cache: OrderedDict, size: int) -> None:
    """Drop ``cache``'s oldest entries past ``size``; calls running at once in other threads (a server's
    inference workers) may drop some meanwhile, so this neither fails on an empty cache nor takes a lock
    (the module stays deep-copyable, as bf16 copies need)."""
    while len(cache) > size:
        try:
            cache.popitem(last=False)
        except KeyError:
            return


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
            table = 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table))  # (N_table, nH)
        bias = table[self.relative_position_index].view(n, n, self.num_heads)
        return bias.permute(2, 0, 1)  # (nH, N, N)

    def _cached(
        self, key: tuple, parameters: list[torch.Tensor], build: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """``build()``, computed once and reused while ``parameters`` are unchanged and autograd is off.

        Under autograd (training) it is rebuilt on every call so gradients reach the parameters; under
        ``torch.compile`` too, so the graph neither breaks nor recompiles on the cache's Python state; and
        under the TorchScript tracer, where the bias is built in the graph from the traced sizes.
        """
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return build()
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return build()
        key = (*key, tuple((p.data_ptr(), _version(p)) for p in parameters))
        cached = self._bias_cache.get(key)
        if cached is None:
            with torch.inference_mode(False), torch.no_grad():  # reusable later in any mode
                cached = build()
            self._bias_cache[key] = cached
            _evict_oldest(self._bias_cache, BIAS_CACHE_SIZE)
        else:
            with contextlib.suppress(KeyError):  # another thread's call may have evicted it meanwhile
                self._bias_cache.move_to_end(key)
        return cached

    def _bias_parameters(self) -> list[torch.Tensor]:
        if self.version == 1:
            return [self.relative_position_bias_table]
        return list(self.cpb_mlp.parameters())  # empty once quantized: packed weights never change

    def attention_bias(
        self,
        padded_size: tuple[Size, Size],
        shift: tuple[Size, Size],
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """The additive mask for SDPA on a padded map of ``padded_size`` shifted by ``shift``.

        (1, nH, N, N) without a shift; (nW, nH, N, N) with one (the position bias plus each window's
        shift mask). Queries are laid out (B*nW, nH, N, hd), window-major within each image.
        """
        return self._cached(
            ("bias", padded_size, shift, dtype, device),
            self._bias_parameters(),
            lambda: self._build_bias(padded_size, shift, dtype, device),
        )

    def _build_bias(
        self,
        padded_size: tuple[Size, Size],
        shift: tuple[Size, Size],
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        bias = self.position_bias().unsqueeze(0)  # (1, nH, N, N)
        if is_unshifted(shift):
            return bias.to(dtype).contiguous()  # SDPA would copy a strided mask on every call
        shift_mask = cached_shift_mask(padded_size, self.window_size, shift, device)  # (nW, N, N)
        return (bias + shift_mask.unsqueeze(1).to(bias.dtype)).to(dtype)  # (nW, nH, N, N)

    def _v2_qkv_bias(self) -> torch.Tensor | None:
        """v2's (3C,) qkv bias: q_bias, zeros for k, v_bias; None without biases or for v1 (in ``qkv``)."""
        if self.version == 1 or self.q_bias is None:
            return None
        return self._cached(
            ("qkv_bias",),
            [self.q_bias, self.v_bias],
            lambda: torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias)),
        )

    def _logit_scale(self) -> torch.Tensor:
        """v2's per-head temperature, (nH, 1, 1), clamped at 100."""
        return self._cached(
            ("logit_scale",),
            [self.logit_scale],
            lambda: torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp(),
        )

    def forward(
        self, windows: torch.Tensor, padded_size: tuple[Size, Size], shift: tuple[Size, Size] = (0, 0)
    ) -> torch.Tensor:
        """Attend within each window.

        windows: (B, nW, N, C) tokens of every window of a (possibly cyclically shifted) map of
        ``padded_size``; ``shift`` is the (vertical, horizontal) cyclic shift applied to it.
        Returns (B, nW, N, C).
        """
        B, nW, N, C = windows.shape
        qkv = self.qkv(windows)  # (B, nW, N, 3C)
        qkv_bias = self._v2_qkv_bias()
        if qkv_bias is not None:  # in place: the projection's output is not needed by its backward
            qkv = qkv.add_(qkv_bias)
        # a view, no copy: (B*nW, N, 3, nH, hd) -> (3, B*nW, nH, N, hd)
        qkv = qkv.view(B * nW, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scale = None
        if self.version == 2:
            q = F.normalize(q, dim=-1) * self._logit_scale()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        bias = self.attention_bias(padded_size, shift, q.dtype, q.device)  # (1 or nW, nH, N, N)
        per_window = not is_unshifted(shift) if torch.jit.is_tracing() else bias.shape[0] > 1
        if per_window:  # one mask per window, repeated for every image (a view when B == 1)
            bias = bias.unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(B * nW, self.num_heads, N, N)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0, scale=scale
        )  # (B*nW, nH, N, hd); SDPA stores it token-major like q, so this reshape is a view (v1)
        out = out.transpose(1, 2).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, version={self.version}"

"""WindowAttention's bias cache under concurrent calls (``swinkit serve --inference-workers N`` on torch)."""

from __future__ import annotations

from collections import OrderedDict

import torch

from swinkit.layers.attention import BIAS_CACHE_SIZE, WindowAttention


class _EvictedAfterLookup(OrderedDict):
    """A cache another thread empties between this thread's lookup and its use of the entry found."""

    def get(self, key, default=None):
        value = super().get(key, default)
        self.clear()
        return value


def test_a_bias_evicted_by_another_call_meanwhile_is_still_used():
    attention = WindowAttention(8, 2, 4).eval()
    windows = torch.randn(2, 4, 16, 8)  # (B, nW, ws*ws, C) of an 8x8 map
    with torch.inference_mode():
        expected = attention(windows, (8, 8), (2, 2))
        attention._bias_cache = _EvictedAfterLookup(attention._bias_cache)
        torch.testing.assert_close(attention(windows, (8, 8), (2, 2)), expected, atol=0, rtol=0)
        for size in range(2, BIAS_CACHE_SIZE + 4):  # more sizes than the cache holds
            attention(torch.randn(1, size * size, 16, 8), (4 * size, 4 * size), (2, 2))

"""Pure functions for Swin's window math: partition/reverse, position indices, shift masks, CPB coordinates."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import torch

# Additive mask value between tokens of different shift regions (the official code's choice).
SHIFT_MASK_VALUE = -100.0


def static_size(size: int) -> int:
    """A map size as a Python int: under ``torch.compile`` a symbolic size is specialised to its value.

    Swin's geometry (padding to window multiples, which axes shift, the shift masks and window indices) is
    decided in Python from the map size, so it is specialised rather than traced symbolically: with
    ``dynamic=True`` the modular padding arithmetic, nested over four stages, made symbolic tracing run for
    many minutes. ``operator.index`` on a SymInt guards on its value (a new image size compiles a new
    graph) without breaking the graph; the batch axis stays symbolic. Eager: the int itself.
    """
    return operator.index(size)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split a (B, H, W, C) map, H and W multiples of ``window_size``, into (B, nW, ws*ws, C) windows."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nWh, nWw, ws, ws, C)
    return x.reshape(B, (H // window_size) * (W // window_size), window_size * window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, nW, ws*ws, C) windows back to a (B, H, W, C) map."""
    B, C = windows.shape[0], windows.shape[-1]
    x = windows.view(B, height // window_size, width // window_size, window_size, window_size, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nWh, ws, nWw, ws, C)
    return x.reshape(B, height, width, C)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 relative position table for every query/key pair."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # (2, ws*ws)
    relative = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    relative = relative.permute(1, 2, 0) + (window_size - 1)  # (N, N, 2), shifted to start at 0
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def log_spaced_coords_table(window_size: int, pretrained_window_size: int) -> torch.Tensor:
    """Swin v2 continuous position bias input: log-spaced relative coordinates, (2ws-1)^2 x 2.

    Coordinates are normalised by the pretrained window (or the window itself) to [-8, 8] and then
    mapped through sign(x) * log2(|x| + 1) / log2(8).
    """
    span = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1)  # (2ws-1, 2ws-1, 2)
    if pretrained_window_size > 0:
        table = table / (pretrained_window_size - 1)
    elif window_size > 1:
        table = table / (window_size - 1)
    table = table * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.reshape(-1, 2)


def _shift_regions(length: int, window_size: int, shift_size: int, device: torch.device) -> torch.Tensor:
    """Region id (0, 1, 2) along one axis of a cyclically shifted map of ``length`` positions."""
    index = torch.arange(length, device=device)
    if shift_size == 0:
        return torch.zeros(length, dtype=torch.long, device=device)
    return (index >= length - window_size).long() + (index >= length - shift_size).long()


def shift_attention_mask(
    height: int, width: int, window_size: int, shift: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask, 0 within a shift region and -100 across regions.

    ``height`` and ``width`` are the padded map sizes; ``shift`` is the (vertical, horizontal) shift.
    """
    device = device or torch.device("cpu")
    rows = _shift_regions(height, window_size, shift[0], device)
    cols = _shift_regions(width, window_size, shift[1], device)
    regions = (rows[:, None] * 3 + cols[None, :]).float()  # (H, W)
    windows = window_partition(regions[None, :, :, None], window_size)[0, :, :, 0]  # (nW, ws*ws)
    different = windows[:, None, :] != windows[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


def _memoised(maxsize: int) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """``functools.lru_cache`` whose tensors are built as normal tensors outside autograd.

    A tensor first built under ``torch.inference_mode`` could not be reused by a later training step
    ("inference tensors cannot be saved for backward"), so the cache never holds one.
    """

    def decorate(build: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args: object) -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad():
                return build(*args)

        return cached

    return decorate


@_memoised(maxsize=32)
def cached_shift_mask(
    padded_size: tuple[int, int], window_size: int, shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """:func:`shift_attention_mask`, built once per (padded size, window, shift, device)."""
    return shift_attention_mask(padded_size[0], padded_size[1], window_size, shift, device)


@_memoised(maxsize=64)
def window_gather_index(
    padded_size: tuple[int, int], window_size: int, shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(nW*ws*ws,) flat position in the padded map of every window token after a cyclic shift by -shift.

    ``map.view(B, Hp*Wp, C).index_select(1, index)`` is roll + :func:`window_partition` in one copy.
    """
    height, width = padded_size
    positions = torch.arange(height * width, device=device).view(1, height, width, 1)
    rolled = torch.roll(positions, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return window_partition(rolled, window_size).reshape(-1)


@_memoised(maxsize=64)
def window_scatter_index(
    size: tuple[int, int],
    padded_size: tuple[int, int],
    window_size: int,
    shift: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """(H*W,) window-token index holding each position of the unpadded ``size`` map.

    The inverse of :func:`window_gather_index` restricted to the unpadded area:
    ``windows.view(B, nW*N, C).index_select(1, index)`` is window_reverse + roll back + crop in one copy.
    """
    gather = window_gather_index(padded_size, window_size, shift, device)
    inverse = torch.empty_like(gather)
    inverse[gather] = torch.arange(gather.numel(), device=device)
    return inverse.view(padded_size)[: size[0], : size[1]].reshape(-1)

"""Pure functions for Swin's window math: partition/reverse, position indices, shift masks, CPB coordinates."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import torch

# Additive mask value between tokens of different shift regions (the official code's choice).
SHIFT_MASK_VALUE = -100.0


Size = int | torch.Tensor  # a map size: a Python int, or a traced 0-dim tensor under ``torch.jit.trace``


def static_size(size: Size) -> Size:
    """A map size as a Python int: under ``torch.compile`` a symbolic size is specialised to its value.

    Swin's geometry (padding to window multiples, which axes shift, the shift masks and window indices) is
    decided in Python from the map size, so it is specialised rather than traced symbolically: with
    ``dynamic=True`` the modular padding arithmetic, nested over four stages, made symbolic tracing run for
    many minutes. ``operator.index`` on a SymInt guards on its value (a new image size compiles a new
    graph) without breaking the graph; the batch axis stays symbolic. Eager: the int itself.

    Under the TorchScript tracer (ONNX export) the size stays the traced 0-dim tensor ``x.shape`` gives, so
    the geometry is recorded as shape arithmetic and the graph runs at any size (transformers' ``torch_int``).
    """
    if torch.jit.is_tracing():
        return size
    return operator.index(size)


def is_unshifted(shift: tuple[Size, Size]) -> bool:
    """Whether ``shift`` is statically (0, 0); a traced shift (a tensor, zero or not at run time) is not."""
    return all(isinstance(s, int) and s == 0 for s in shift)


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


def _shift_regions(length: Size, window_size: int, shift_size: Size, device: torch.device) -> torch.Tensor:
    """Region id (0, 1, 2) along one axis of a cyclically shifted map of ``length`` positions."""
    index = torch.arange(length, device=device)
    if isinstance(shift_size, int) and shift_size == 0:
        return torch.zeros_like(index)
    first = index >= length - window_size
    if isinstance(shift_size, torch.Tensor):  # traced: the shift may be 0 at run time (no regions then)
        first = first & (shift_size > 0)
    return first.long() + (index >= length - shift_size).long()


def shift_attention_mask(
    height: Size, width: Size, window_size: int, shift: tuple[Size, Size], device: torch.device | None = None
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
    return torch.zeros_like(different, dtype=torch.float32).masked_fill(different, SHIFT_MASK_VALUE)


def _memoised(maxsize: int) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """``functools.lru_cache`` whose tensors are built as normal tensors outside autograd.

    A tensor first built under ``torch.inference_mode`` could not be reused by a later training step
    ("inference tensors cannot be saved for backward"), so the cache never holds one. Under the TorchScript
    tracer nothing is cached: the tensor is built in the graph from the traced sizes.
    """

    def decorate(build: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args: object) -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad():
                return build(*args)

        @functools.wraps(build)
        def cached_unless_tracing(*args: object) -> torch.Tensor:
            return build(*args) if torch.jit.is_tracing() else cached(*args)

        return cached_unless_tracing

    return decorate


@_memoised(maxsize=32)
def cached_shift_mask(
    padded_size: tuple[Size, Size], window_size: int, shift: tuple[Size, Size], device: torch.device
) -> torch.Tensor:
    """:func:`shift_attention_mask`, built once per (padded size, window, shift, device)."""
    return shift_attention_mask(padded_size[0], padded_size[1], window_size, shift, device)


@_memoised(maxsize=64)
def window_gather_index(
    padded_size: tuple[Size, Size], window_size: int, shift: tuple[Size, Size], device: torch.device
) -> torch.Tensor:
    """(nW*ws*ws,) flat position in the padded map of every window token after a cyclic shift by -shift.

    ``map.view(B, Hp*Wp, C).index_select(1, index)`` is roll + :func:`window_partition` in one copy: the
    rolled map's row r holds row (r + shift) mod Hp (likewise columns).
    """
    height, width = padded_size
    rows = (torch.arange(height, device=device) + shift[0]) % height  # (Hp,)
    cols = (torch.arange(width, device=device) + shift[1]) % width  # (Wp,)
    positions = (rows[:, None] * width + cols[None, :]).view(1, height, width, 1)  # (1, Hp, Wp, 1)
    return window_partition(positions, window_size).reshape(-1)


@_memoised(maxsize=64)
def window_scatter_index(
    size: tuple[Size, Size],
    padded_size: tuple[Size, Size],
    window_size: int,
    shift: tuple[Size, Size],
    device: torch.device,
) -> torch.Tensor:
    """(H*W,) window-token index holding each position of the unpadded ``size`` map.

    The inverse of :func:`window_gather_index` restricted to the unpadded area:
    ``windows.view(B, nW*N, C).index_select(1, index)`` is window_reverse + roll back + crop in one copy.
    Position (i, j) sits at (i - shift) mod Hp, (j - shift) mod Wp of the rolled map, in window
    (r // ws, c // ws) at offset (r % ws, c % ws).
    """
    (height, width), (padded_h, padded_w), ws = size, padded_size, window_size
    rows = (torch.arange(height, device=device) - shift[0] + padded_h) % padded_h  # (H,)
    cols = (torch.arange(width, device=device) - shift[1] + padded_w) % padded_w  # (W,)
    window = (rows // ws)[:, None] * (padded_w // ws) + (cols // ws)[None, :]  # (H, W)
    offset = ((rows % ws) * ws)[:, None] + (cols % ws)[None, :]  # (H, W)
    return (window * (ws * ws) + offset).reshape(-1)

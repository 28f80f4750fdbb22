"""The SimMIM reconstruction grid: original / masked input / reconstruction of a few held-out images, as a PNG.

One column per image, three rows: the de-normalised original, the masked input (masked squares grey) and the
reconstruction (the model's pixels on the masked squares, the original on the visible ones: the loss sees
only the masked pixels, so the visible output means nothing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from swinkit.checkpoint_io import atomic_path

ROWS = ("original", "masked", "reconstruction")
LABEL_WIDTH = 100  # pixels of the left column holding the row names
MIN_TILE = 96  # small images are enlarged (nearest neighbour) to at least this side


def denormalise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B, 3, H, W) normalised pixels -> (B, H, W, 3) uint8 RGB."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    rgb = (pixels.float().cpu() * std_t + mean_t).clamp(0, 1)  # (B, 3, H, W) in [0, 1]
    return (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (B, H, W, 3)


def pixel_mask(mask: torch.Tensor, patch: int) -> np.ndarray:
    """(B, H/p, W/p) patch mask (1 = masked) -> (B, H, W, 1) bool pixel mask."""
    pixels = mask.bool().cpu().repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # (B, H, W)
    return pixels.unsqueeze(-1).numpy()  # (B, H, W, 1)


def grid_rows(
    pixels: torch.Tensor,
    mask: torch.Tensor,
    reconstruction: torch.Tensor,
    patch: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> list[np.ndarray]:
    """The three rows, each (B, H, W, 3) uint8: original, masked input, reconstruction on the masked squares."""
    if pixels.shape != reconstruction.shape or pixels.shape[2] != mask.shape[1] * patch:
        raise ValueError(
            f"pixels {tuple(pixels.shape)}, mask {tuple(mask.shape)} (patch {patch}) and reconstruction "
            f"{tuple(reconstruction.shape)} do not describe the same images"
        )
    original = denormalise(pixels, mean, std)
    masked = pixel_mask(mask, patch)
    grey = np.full_like(original, 128)
    return [
        original,
        np.where(masked, grey, original),
        np.where(masked, denormalise(reconstruction, mean, std), original),
    ]


def write_grid(
    pixels: torch.Tensor,
    mask: torch.Tensor,
    reconstruction: torch.Tensor,
    patch: int,
    mean: Sequence[float],
    std: Sequence[float],
    path: str | os.PathLike,
) -> Path:
    """Write the grid of ``pixels`` (B, 3, H, W), ``mask`` (B, H/p, W/p) and ``reconstruction`` to ``path``."""
    rows = grid_rows(pixels, mask, reconstruction, patch, mean, std)
    count, height, width = rows[0].shape[:3]
    zoom = max(1, -(-MIN_TILE // min(height, width)))
    tile_h, tile_w, gap = height * zoom, width * zoom, 4
    canvas = Image.new(
        "RGB", (LABEL_WIDTH + count * (tile_w + gap), len(rows) * (tile_h + gap)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for r, (name, row) in enumerate(zip(ROWS, rows)):
        top = r * (tile_h + gap)
        draw.text((4, top + tile_h // 2 - 6), name, fill=(0, 0, 0))
        for c in range(count):
            tile = Image.fromarray(row[c]).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + c * (tile_w + gap), top))
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        canvas.save(tmp, format="PNG")
    return path

"""Drawing a semantic segmentation: each pixel tinted with its class colour, and a legend of the classes
present (colour, name, share of the pixels) in a panel to the right of the image.

Colours: the ADE20K palette of mmsegmentation for the ADE20K classes, otherwise mmseg's fallback for a
dataset without a palette (``BaseSegDataset._update_palette``: ``randint(0, 255, (n, 3))`` seeded with 42).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from swinkit.checkpoint_io import open_output
from swinkit.models.segmentation.ade20k import ADE20K_CLASSES, ADE20K_PALETTE
from swinkit.visualize import font_size_for

ALPHA = 0.5  # weight of the class colour in the tint (the image keeps the rest)
MAX_LEGEND = 20  # classes listed at most ("+N more" says how many are left out)
MIN_SIDE = 320  # shorter side a small image is enlarged to (nearest neighbour) so the legend stays legible


def palette_for(labels: Sequence[str]) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colour of each class."""
    if tuple(labels) == ADE20K_CLASSES:
        return np.asarray(ADE20K_PALETTE, dtype=np.uint8)
    return np.random.RandomState(42).randint(0, 255, size=(len(labels), 3)).astype(np.uint8)


def tint(image: Image.Image, label_map: np.ndarray, palette: np.ndarray) -> Image.Image:
    """``image`` blended with the colour of each pixel's class; ``label_map`` is (H, W) at the image's size."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    if pixels.shape[:2] != label_map.shape:
        raise ValueError(f"the label map is {label_map.shape[::-1]} pixels, the image {image.size}")
    colours = palette[label_map].astype(np.float32)  # (H, W, 3)
    return Image.fromarray(np.round(pixels * (1 - ALPHA) + colours * ALPHA).astype(np.uint8))


def _enlarged(image: Image.Image) -> Image.Image:
    short = min(image.size)
    if short >= MIN_SIDE:
        return image
    scale = MIN_SIDE / short
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)


def draw_segmentation(
    image: Image.Image,
    label_map: np.ndarray,
    legend: Sequence[tuple[int, str, float]],
    palette: np.ndarray,
) -> Image.Image:
    """The tinted image with a legend panel on its right; ``legend`` is (class index, name, fraction) rows."""
    canvas = _enlarged(tint(image, label_map, palette))
    size = font_size_for(*canvas.size)
    font = ImageFont.load_default(size=size)
    pad, row = size // 2, size + size // 3
    rows = [(palette[i], f"{name}  {fraction:.1%}") for i, name, fraction in legend[:MAX_LEGEND]]
    if len(legend) > MAX_LEGEND:
        rows.append((None, f"+{len(legend) - MAX_LEGEND} more"))
    text_width = max((font.getlength(text) for _, text in rows), default=0)
    panel_width = int(3 * pad + size + text_width + pad)
    height = max(canvas.height, 2 * pad + len(rows) * row)
    out = Image.new("RGB", (canvas.width + panel_width, height), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (colour, text) in enumerate(rows):
        x, y = canvas.width + pad, pad + k * row
        if colour is not None:
            draw.rectangle((x, y, x + size, y + size), fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + size + pad, y), text, font=font, fill=(0, 0, 0), anchor="lt")
    return out


def label_map_image(label_map: np.ndarray, num_classes: int) -> Image.Image:
    """The (H, W) class indices as a greyscale PNG image: 8-bit up to 256 classes, 16-bit beyond."""
    if num_classes > 65536:
        raise ValueError(f"a PNG label map holds at most 65536 classes, the model has {num_classes}")
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    return Image.fromarray(np.ascontiguousarray(label_map, dtype=dtype))


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """``image`` as a PNG at ``path`` (by the rule of ``open_output``); returns the path."""
    path = Path(path)
    with open_output(path, "wb", ".png") as f:
        image.save(f, format="PNG")
    return path

"""Drawing detections on their image, as mmdetection's ``DetLocalVisualizer`` does for the model card's picture:
each object's mask filled translucent in its class colour, its box outlined in that colour, and its label and
score on a filled tag at the box's top-left corner.

Small images are enlarged first (nearest neighbour, as ``swinkit.visualize`` does for classification) so that
the tags stay legible; the font scales with the canvas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from swinkit.checkpoint_io import open_output
from swinkit.visualize import MIN_SIDE, _canvas, font_size_for

if TYPE_CHECKING:
    from swinkit.tasks.instance_results import InstancePrediction

MASK_ALPHA = 0.5  # opacity of a filled mask
PALETTE = (  # distinct colours, one per label index (cycled)
    (220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230), (106, 0, 228), (0, 60, 100), (0, 80, 100),
    (0, 0, 70), (0, 0, 192), (250, 170, 30), (100, 170, 30), (220, 220, 0), (175, 116, 175), (250, 0, 30),
    (165, 42, 42), (255, 77, 255), (0, 226, 252), (182, 182, 255), (0, 82, 0), (120, 166, 157),
)  # fmt: skip


def colour_of(label: int) -> tuple[int, int, int]:
    return PALETTE[label % len(PALETTE)]


def _paint_masks(canvas: np.ndarray, result: InstancePrediction) -> np.ndarray:
    """(H, W, 3) uint8 canvas with each mask blended in its colour (masks resized to the canvas)."""
    out = canvas.astype(np.float32)
    height, width = canvas.shape[:2]
    rows = np.arange(height) * result.height // height  # canvas row -> mask row (nearest)
    cols = np.arange(width) * result.width // width
    for mask, label in zip(result.masks, result.labels, strict=True):
        scaled = mask[rows[:, None], cols[None, :]]  # (H, W) bool on the canvas
        colour = np.array(colour_of(int(label)), dtype=np.float32)
        out[scaled] = (1 - MASK_ALPHA) * out[scaled] + MASK_ALPHA * colour
    return out.round().astype(np.uint8)


def draw_instances(image: Image.Image, result: InstancePrediction) -> Image.Image:
    """A copy of ``image`` (enlarged if small) with ``result``'s masks, boxes, labels and scores drawn on it."""
    canvas = _canvas(image)
    scale_x, scale_y = canvas.width / result.width, canvas.height / result.height
    if result.masks is not None and len(result):
        canvas = Image.fromarray(_paint_masks(np.asarray(canvas), result))
    draw = ImageDraw.Draw(canvas)
    size = max(10, font_size_for(*canvas.size) * 2 // 3)
    font = ImageFont.load_default(size=size)
    line = max(1, round(min(canvas.size) / MIN_SIDE * 2))
    for (x1, y1, x2, y2), name, score, label in zip(
        result.boxes.tolist(), result.names, result.scores.tolist(), result.labels.tolist(), strict=True
    ):
        colour = colour_of(int(label))
        box = (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y)
        draw.rectangle(box, outline=colour, width=line)
        text = f"{name}: {score:.2f}"
        anchor = "lb" if box[1] >= size + 4 else "lt"  # above the box, or inside it at the top edge
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text, font=font, anchor=anchor)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
        draw.text((box[0], box[1]), text, font=font, fill=(255, 255, 255), anchor=anchor)
    return canvas


def save_instances_image(image: Image.Image, result: InstancePrediction, path: str | os.PathLike) -> Path:
    """Write ``draw_instances(image, result)`` as a PNG (by the rule of ``open_output``); returns the path."""
    path = Path(path)
    with open_output(path, "wb", ".png") as f:
        draw_instances(image, result).save(f, format="PNG")
    return path

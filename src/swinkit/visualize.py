"""Drawing a prediction on its image: the top labels and probabilities in a box in the top-left corner.

The text scales with the image (about 1/22 of its shorter side), so it reads the same on a phone photo and a
thumbnail: images smaller than ``MIN_SIDE`` pixels on their shorter side are enlarged first (nearest
neighbour, so pixels stay visible), and long labels are shortened with an ellipsis to fit the width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from swinkit.checkpoint_io import open_output

MIN_SIDE = 320  # shorter side the canvas is enlarged to, so the text fits and stays legible
MIN_FONT = 12  # pixels
MAX_LINES = 10  # labels drawn at most (multi-label predictions may have more; "+N more" says so)


def font_size_for(width: int, height: int) -> int:
    """Text height in pixels for a canvas of this size."""
    return max(MIN_FONT, round(min(width, height) / 22))


MAX_CANVAS_SIDE = 4096  # a small image is enlarged for legible text, never beyond this side


def _canvas(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    short = min(image.size)
    if short >= MIN_SIDE:
        return image.copy()
    scale = min(MIN_SIDE / short, MAX_CANVAS_SIDE / max(image.size))  # bounded for thin strips
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST)


def _fit(text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """``text``, shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if font.getlength(text) <= width:
        return text
    while len(text) > 1 and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _lines(top: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    lines = [(label, f"{prob:.1%}") for label, prob in top[:MAX_LINES]]
    if len(top) > MAX_LINES:
        lines.append((f"+{len(top) - MAX_LINES} more", ""))
    return lines or [("no label above the threshold", "")]


def draw_prediction(image: Image.Image, top: Sequence[tuple[str, float]]) -> Image.Image:
    """A copy of ``image`` (enlarged if small) with ``top`` (label, probability) pairs drawn on it."""
    canvas = _canvas(image)
    size = font_size_for(*canvas.size)
    font = ImageFont.load_default(size=size)
    pad, gap = size // 2, size // 4
    max_text = canvas.width - 4 * pad
    prob_width = font.getlength("100.0%")
    lines = [(_fit(label, font, max_text - prob_width - 2 * pad), prob) for label, prob in _lines(top)]
    label_width = max(font.getlength(label) for label, _ in lines)
    box_w = min(canvas.width - 2 * pad, label_width + prob_width + 4 * pad)
    box_h = len(lines) * (size + gap) + 2 * pad - gap
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rounded_rectangle((pad, pad, pad + box_w, pad + box_h), radius=pad, fill=(0, 0, 0, 170))
    for row, (label, prob) in enumerate(lines):
        y = 2 * pad + row * (size + gap)
        draw.text((2 * pad, y), label, font=font, fill=(255, 255, 255, 255), anchor="lt")
        draw.text((pad + box_w - pad, y), prob, font=font, fill=(255, 220, 90, 255), anchor="rt")
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")


def save_prediction_image(
    image: Image.Image, top: Sequence[tuple[str, float]], path: str | os.PathLike
) -> Path:
    """Write ``draw_prediction(image, top)`` as a PNG (by the rule of ``open_output``); returns the path."""
    path = Path(path)
    with open_output(path, "wb", ".png") as f:
        draw_prediction(image, top).save(f, format="PNG")
    return path

"""Visualization: labels drawn legibly on thumbnails and on large photos."""

from __future__ import annotations

import numpy as np
from PIL import Image

from swinkit.visualize import MAX_LINES, MIN_SIDE, draw_prediction, font_size_for, save_prediction_image

BACKGROUND = (90, 140, 200)
TOP = [("tabby, tabby cat", 0.81), ("Egyptian cat", 0.1), ("tiger cat, " + "a very long label " * 8, 0.05)]


def _box_rows(drawn: Image.Image) -> int:
    """Rows where the label box darkens a uniform background, in the box's left margin."""
    size = font_size_for(*drawn.size)
    column = np.asarray(drawn)[:, int(1.5 * (size // 2))].astype(int)
    return int((column.sum(axis=1) < sum(BACKGROUND) * 0.6).sum())


def test_thumbnail_is_enlarged_and_labelled(tmp_path):
    thumb = Image.new("RGB", (32, 24), BACKGROUND)
    path = save_prediction_image(thumb, TOP, tmp_path / "thumb.png")
    drawn = Image.open(path)
    assert drawn.format == "PNG" and min(drawn.size) == MIN_SIDE and drawn.size[0] > drawn.size[1]
    pixels = np.asarray(drawn)
    assert (pixels == 255).all(axis=2).sum() > 200  # white text strokes
    assert _box_rows(drawn) >= 3 * font_size_for(*drawn.size)  # three lines of text


def test_large_image_keeps_its_size_and_gets_large_text():
    drawn = draw_prediction(Image.new("RGB", (4000, 3000), BACKGROUND), TOP)
    assert drawn.size == (4000, 3000)
    size = font_size_for(*drawn.size)
    assert size >= 120
    assert 3 * size <= _box_rows(drawn) <= 5 * size
    right_margin = np.asarray(drawn)[:, -size // 4 :]
    assert (right_margin == BACKGROUND).all()  # the long label was shortened to fit inside the image


def test_many_labels_are_capped_with_a_more_line():
    image = Image.new("RGB", (600, 2000), BACKGROUND)
    few = _box_rows(draw_prediction(image, TOP))
    many = [(f"label {i}", 0.9 - i / 100) for i in range(30)]
    capped = _box_rows(draw_prediction(image, many))
    line = font_size_for(600, 2000) * 5 // 4
    assert abs(capped - few - (MAX_LINES + 1 - len(TOP)) * line) <= 3
    empty = _box_rows(draw_prediction(image, []))
    assert 0 < empty < few  # "no label above the threshold"


def test_a_thin_strip_is_not_blown_up_to_gigabytes():
    drawn = draw_prediction(Image.new("RGB", (2, 150)), [("a", 0.9)])
    assert max(drawn.size) <= 4096

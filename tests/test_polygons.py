"""Masks -> polygons -> masks (swinkit.ops.polygons): parts, holes, the point bound and the round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swinkit.ops.polygons import (
    mask_to_normalized_polygons,
    mask_to_polygons,
    normalize_polygons,
    polygons_to_mask,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def disc(height: int, width: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.circle(mask, centre, radius, 1, thickness=-1)
    return mask.astype(bool)


def round_trip(mask: np.ndarray, **kwargs) -> np.ndarray:
    polygons = [p.reshape(-1) for p in mask_to_polygons(mask, **kwargs)]
    return polygons_to_mask(polygons, *mask.shape)


@pytest.mark.parametrize(
    "mask",
    [
        disc(60, 80, (40, 30), 20),
        disc(37, 41, (10, 12), 6),
        np.pad(np.ones((15, 22), dtype=bool), ((5, 9), (3, 11))),
        np.ones((12, 9), dtype=bool),  # touches every border
    ],
    ids=["disc", "small-disc", "rectangle", "full"],
)
def test_round_trip_keeps_the_mask(mask):
    assert iou(round_trip(mask), mask) > 0.95


def test_two_parts_give_two_polygons_and_round_trip():
    mask = disc(64, 96, (20, 30), 12) | disc(64, 96, (70, 30), 15)
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert iou(round_trip(mask), mask) > 0.95


def test_a_hole_is_dropped_and_filled():
    outer, hole = disc(64, 64, (32, 32), 25), disc(64, 64, (32, 32), 10)
    ring = outer & ~hole
    polygons = mask_to_polygons(ring)
    assert len(polygons) == 1  # the hole is not a second polygon (readers would fill it)
    assert iou(round_trip(ring), outer) > 0.95


def test_a_part_inside_a_hole_is_its_own_polygon():
    ring = disc(80, 80, (40, 40), 35) & ~disc(80, 80, (40, 40), 20)
    island = disc(80, 80, (40, 40), 8)
    assert len(mask_to_polygons(ring | island)) == 2


def test_point_count_is_bounded():
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radii = 60 + rng.uniform(-15, 15, angles.shape)  # a jagged star: a long outline
    points = np.stack([100 + radii * np.cos(angles), 100 + radii * np.sin(angles)], 1).astype(np.int32)
    star = np.zeros((200, 200), dtype=np.uint8)
    cv2.fillPoly(star, [points], 1)
    assert len(mask_to_polygons(star, max_points=1000)[0]) > 500
    (bounded,) = mask_to_polygons(star)
    assert 50 <= len(bounded) <= 100  # the default bound, Azure's
    assert iou(round_trip(star), star.astype(bool)) > 0.88
    ellipse = np.zeros((200, 300), dtype=np.uint8)
    cv2.ellipse(ellipse, (150, 100), (120, 70), 20, 0, 360, 1, thickness=-1)
    (smooth,) = mask_to_polygons(ellipse, max_points=40)
    assert len(smooth) <= 40
    assert iou(round_trip(ellipse, max_points=40), ellipse.astype(bool)) > 0.98


def test_empty_mask_gives_no_polygon_and_one_pixel_one():
    assert mask_to_polygons(np.zeros((10, 10), dtype=bool)) == []
    single = np.zeros((10, 10), dtype=bool)
    single[4, 7] = True
    (square,) = mask_to_polygons(single)
    assert len(square) == 4
    assert np.array_equal(round_trip(single), single)


def test_normalised_polygons_are_fractions_of_the_image():
    mask = np.zeros((50, 100), dtype=bool)
    mask[10:40, 20:80] = True
    (flat,) = mask_to_normalized_polygons(mask)
    xs, ys = np.array(flat[0::2]), np.array(flat[1::2])
    assert xs.min() == pytest.approx(20.25 / 100) and xs.max() == pytest.approx(79.75 / 100)
    assert ys.min() == pytest.approx(10.25 / 50) and ys.max() == pytest.approx(39.75 / 50)
    assert normalize_polygons([np.array([[-5.0, 0.0], [120.0, 60.0], [3.0, 4.0]])], 100, 50)[0] == [
        0.0,
        0.0,
        1.0,
        1.0,
        0.03,
        0.08,
    ]


def test_bad_arguments_say_why():
    with pytest.raises(ValueError, match="at least 3 points"):
        mask_to_polygons(np.ones((4, 4), dtype=bool), max_points=2)
    with pytest.raises(ValueError, match=r"must be \(H, W\)"):
        mask_to_polygons(np.ones((2, 4, 4), dtype=bool))

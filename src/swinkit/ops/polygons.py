"""Binary masks <-> polygons: the outlines the Azure ML instance-segmentation schema carries.

``mask_to_polygons`` traces a mask with ``cv2.findContours`` and gives one polygon ``[x1, y1, x2, y2, ...]`` per
connected part, in pixel coordinates of the mask (a pixel ``(row i, column j)`` covers ``[j, j + 1] x [i, i + 1]``).
``polygons_to_mask`` rasterises polygons as pycocotools does (the COCO rule), so a round trip keeps the mask.

Holes: the Azure schema has no holes field, and its readers (and COCO's) fill every polygon of an object and take
the union, so a hole written as one more polygon would be filled as foreground. Holes are therefore dropped: a
ring becomes its outer outline, filled. ``RETR_CCOMP`` finds outer outlines and holes; only the outer ones
(no parent in the hierarchy) are kept, so a part inside a hole of another part is still its own polygon.

Point count: each polygon has at most ``max_points`` points (Azure AutoML's default, 100); a longer outline is
simplified with ``cv2.approxPolyDP`` at a growing tolerance (Azure's 25 simplifications at most; if it still has
too many points, they are subsampled evenly).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

MAX_POINTS = 100  # Azure AutoML's DEFAULT_MAX_NUMBER_OF_POLYGON_POINTS
MAX_SIMPLIFICATIONS = 25  # Azure AutoML's DEFAULT_MAX_NUMBER_OF_POLYGON_SIMPLIFICATIONS
FIRST_EPSILON = 0.5  # pixels: the first approxPolyDP tolerance, multiplied by GROWTH until the outline fits
GROWTH = 1.3
UPSAMPLE = 2  # outlines are traced on the mask upsampled this many times (see mask_to_polygons)


def _bounded(contour: np.ndarray, max_points: int) -> np.ndarray:
    """``contour`` (K, 1, 2) on the upsampled grid, simplified until it has at most ``max_points`` points: the
    full outline simplified at a tolerance growing by ``GROWTH`` (the first that fits is kept)."""
    epsilon = FIRST_EPSILON * UPSAMPLE
    simplified = contour
    for _ in range(MAX_SIMPLIFICATIONS):
        if len(simplified) <= max_points:
            return simplified
        simplified = cv2.approxPolyDP(contour, epsilon, True)
        epsilon *= GROWTH
    if len(simplified) > max_points:
        keep = np.linspace(0, len(simplified), max_points, endpoint=False).astype(int)
        simplified = simplified[keep]
    return simplified


def _outer_contours(mask: np.ndarray) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Outer contours of ``mask`` (H, W) bool traced at ``UPSAMPLE`` x on its bounding box (padded by one
    pixel), and the (x, y) pixel offset of that box. Only the box is copied: a full-image mask of a small
    object costs two reductions, not a full-size copy."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [], (0, 0)
    top, left = int(rows[0]), int(cols[0])
    crop = np.pad(mask[top : rows[-1] + 1, left : cols[-1] + 1].astype(np.uint8), 1)  # (h + 2, w + 2)
    crop = np.repeat(np.repeat(crop, UPSAMPLE, axis=0), UPSAMPLE, axis=1)  # (2 (h + 2), 2 (w + 2))
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return [], (0, 0)
    outer = [c for c, (_, _, _, parent) in zip(contours, hierarchy.reshape(-1, 4), strict=True) if parent < 0]
    return outer, (left - 1, top - 1)


def mask_to_polygons(mask: np.ndarray, *, max_points: int = MAX_POINTS) -> list[np.ndarray]:
    """The outer outline of each connected part of ``mask`` (H, W), as (K, 2) float (x, y) pixel coordinates,
    K between 3 and ``max_points``.

    Mirrors detectron2's ``GenericMask.mask_to_polygons`` (``RETR_CCOMP``, OpenCV's integer indices moved by
    +0.5 to pixel centres), traced on the mask upsampled twice: outlines through the centres of the boundary
    pixels would lose half a pixel all round (IoU 0.85 for a disc of radius 6), a quarter-pixel inset on the
    upsampled grid rasterises back to the same pixels. Holes are dropped, the point count is bounded (see the
    module docstring).
    """
    if max_points < 3:
        raise ValueError(f"a polygon needs at least 3 points, so max_points must be >= 3, got {max_points}")
    array = np.asarray(mask).astype(bool, copy=False)  # (H, W)
    if array.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {array.shape}")
    contours, offset = _outer_contours(array)
    polygons = []
    for contour in contours:
        points = _bounded(contour, max_points).reshape(-1, 2).astype(np.float64)  # (K, 2) upsampled grid
        if len(points) >= 3:
            polygons.append((points + 0.5) / UPSAMPLE + np.array(offset, dtype=np.float64))
    return polygons


def normalize_polygons(polygons: Sequence[np.ndarray], width: int, height: int) -> list[list[float]]:
    """(K, 2) pixel polygons as flat ``[x1, y1, x2, y2, ...]`` lists of image fractions, clipped to [0, 1]."""
    scale = np.array([width, height], dtype=np.float64)
    return [np.clip(np.asarray(p, dtype=np.float64) / scale, 0.0, 1.0).reshape(-1).tolist() for p in polygons]


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """(H, W) bool union of flat ``[x1, y1, ...]`` pixel polygons, rasterised by pycocotools (the COCO rule)."""
    flat = [[float(v) for v in p] for p in polygons if len(p) >= 6]
    if not flat:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(flat, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_to_normalized_polygons(mask: np.ndarray, *, max_points: int = MAX_POINTS) -> list[list[float]]:
    """``mask`` (H, W)'s outlines as the Azure schema writes them: flat lists of image fractions."""
    height, width = np.asarray(mask).shape
    return normalize_polygons(mask_to_polygons(mask, max_points=max_points), width, height)

"""mmdetection's multi-scale + crop training pipeline for instances (the Swin 3x recipe, from DETR).

``configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py``'s ``train_pipeline``: ``RandomFlip(0.5)``, then
mmcv's ``RandomChoice`` of two branches (equally likely):

1. ``RandomChoiceResize`` to a short side of 480, 512, ..., 800 (long side at most 1333), keeping the ratio;
2. ``RandomChoiceResize`` to 400, 500 or 600, ``RandomCrop(crop_type="absolute_range", crop_size=(384, 600),
   allow_negative_crop=True)``, then ``RandomChoiceResize`` as in branch 1.

Followed: mmdet 3.3 ``datasets/transforms/transforms.py`` (``Resize``: boxes scaled by ``scale_factor`` and
clipped, masks rescaled nearest, ``scale_factor`` of the last resize; ``RandomCrop._get_crop_size`` /
``_rand_offset`` / ``_crop_data``: boxes shifted, clipped, and those not ``is_inside`` dropped with their
labels and masks, ``recompute_bbox=False``), mmcv 2.x ``transforms/processing.py::RandomChoiceResize``
and ``structures/mask/structures.py::BitmapMasks`` (``rescale``, ``crop``, ``flip``). The draws come from the
sample's own generator, so a run is a pure function of (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from swinkit.models.detection.preprocess import rescale_size

SHORT_SIDES_3X = tuple(range(480, 801, 32))  # 480, 512, ..., 800
CROP_SHORT_SIDES_3X = (400, 500, 600)
CROP_RANGE_3X = (384, 600)


@dataclass(frozen=True)
class Instances:
    """One training image and its objects, in the image's current pixels."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (G, 4) float32 x1, y1, x2, y2
    labels: np.ndarray  # (G,) int64
    masks: np.ndarray | None  # (G, H, W) uint8, or None for boxes-only data

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def rescale(inst: Instances, scale: tuple[int, int]) -> tuple[Instances, tuple[float, float]]:
    """mmdet's ``Resize(scale, keep_ratio=True)``: the image bilinear, the masks nearest, both to the size
    ``rescale_size`` fits in the (long, short) ``scale``; boxes scaled and clipped. Returns the ``scale_factor``
    (new_w / w, new_h / h) too."""
    h, w = inst.shape
    new_w, new_h = rescale_size(w, h, scale)
    pixels = cv2.resize(inst.pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    factor = (new_w / w, new_h / h)
    boxes = inst.boxes * np.array(factor * 2, dtype=np.float32)  # (G, 4)
    boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, new_w), boxes[:, 1::2].clip(0, new_h)
    masks = inst.masks
    if masks is not None:
        masks = np.stack(
            [cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST) for m in masks]
        ) if len(masks) else np.zeros((0, new_h, new_w), np.uint8)  # fmt: skip
    return Instances(pixels, boxes.astype(np.float32), inst.labels, masks), factor


def hflip(inst: Instances) -> Instances:
    """mmdet's horizontal ``RandomFlip``: pixels and masks mirrored, boxes ``x1, x2 = w - x2, w - x1``."""
    w = inst.shape[1]
    boxes = inst.boxes.copy()
    boxes[:, 0], boxes[:, 2] = w - inst.boxes[:, 2], w - inst.boxes[:, 0]
    masks = None if inst.masks is None else np.ascontiguousarray(inst.masks[:, :, ::-1])
    return Instances(np.ascontiguousarray(inst.pixels[:, ::-1]), boxes, inst.labels, masks)


def crop(inst: Instances, top: int, left: int, height: int, width: int) -> Instances:
    """mmdet's ``RandomCrop._crop_data`` with ``allow_negative_crop=True``: the window cut out, boxes shifted
    and clipped to it, objects whose clipped box is not inside it (``is_inside``) dropped; may keep none."""
    pixels = inst.pixels[top : top + height, left : left + width]
    h, w = pixels.shape[:2]
    boxes = inst.boxes - np.array([left, top, left, top], dtype=np.float32)  # (G, 4)
    boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
    inside = (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    masks = None if inst.masks is None else inst.masks[inside][:, top : top + h, left : left + w]
    return Instances(pixels, boxes[inside], inst.labels[inside], masks)


def absolute_range_crop(
    rng: np.random.Generator, shape: tuple[int, int], crop_range: Sequence[int]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``RandomCrop(crop_type="absolute_range")``: each side drawn uniformly in
    [min(side, low), min(side, high)], then the offset uniformly in [0, side - crop side]."""
    h, w = shape
    low, high = crop_range
    crop_h = int(rng.integers(min(h, low), min(h, high) + 1))
    crop_w = int(rng.integers(min(w, low), min(w, high) + 1))
    top = int(rng.integers(0, max(h - crop_h, 0) + 1))
    left = int(rng.integers(0, max(w - crop_w, 0) + 1))
    return top, left, crop_h, crop_w


@dataclass(frozen=True)
class MultiScaleCrop:
    """The 3x recipe's ``RandomFlip`` + ``RandomChoice`` pipeline; sides in pixels, mmdet's COCO values by
    default. ``long_side`` bounds every resize (mmdet's 1333)."""

    long_side: int = 1333
    short_sides: tuple[int, ...] = SHORT_SIDES_3X  # the final RandomChoiceResize's short sides
    crop_short_sides: tuple[int, ...] = CROP_SHORT_SIDES_3X  # the resize before the crop
    crop_range: tuple[int, int] = CROP_RANGE_3X  # the crop's (min, max) height and width
    flip: float = 0.5

    def __post_init__(self) -> None:
        sides = (self.long_side, *self.short_sides, *self.crop_short_sides, *self.crop_range)
        if not self.short_sides or not self.crop_short_sides or min(sides) < 1:
            raise ValueError(f"the multi-scale crop sides must be positive and given, got {self}")
        if self.crop_range[0] > self.crop_range[1]:
            raise ValueError(f"the crop range must be (min, max), got {self.crop_range}")

    def _choice_resize(
        self, inst: Instances, sides: Sequence[int], rng: np.random.Generator
    ) -> tuple[Instances, tuple[float, float]]:
        side = sides[int(rng.integers(len(sides)))]  # mmcv's RandomChoiceResize._random_select
        return rescale(inst, (self.long_side, side))

    def __call__(self, inst: Instances, rng: np.random.Generator) -> tuple[Instances, tuple[float, float]]:
        """The augmented instances and the last resize's ``scale_factor``."""
        if rng.random() < self.flip:
            inst = hflip(inst)
        if int(rng.integers(2)) == 1:  # RandomChoice: resize, crop, resize
            inst, _ = self._choice_resize(inst, self.crop_short_sides, rng)
            inst = crop(inst, *absolute_range_crop(rng, inst.shape, self.crop_range))
        return self._choice_resize(inst, self.short_sides, rng)


def scaled_multi_scale_crop(scale: tuple[int, int], flip: float) -> MultiScaleCrop:
    """The 3x pipeline for a (long, short) training ``scale`` other than mmdet's (1333, 800): every short side and
    crop bound scaled by ``short / 800`` (rounded), the long bound ``long``; (1333, 800) gives mmdet's values."""
    long_side, short = max(scale), min(scale)
    ratio = short / 800

    def sides(values: Sequence[int]) -> tuple[int, ...]:
        return tuple(max(1, round(v * ratio)) for v in values)

    return replace(
        MultiScaleCrop(flip=flip), long_side=long_side, short_sides=sides(SHORT_SIDES_3X),
        crop_short_sides=sides(CROP_SHORT_SIDES_3X), crop_range=sides(CROP_RANGE_3X),
    )  # fmt: skip

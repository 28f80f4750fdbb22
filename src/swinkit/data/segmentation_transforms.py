"""mmsegmentation 1.x's ADE20K training pipeline on (image, label map) pairs, drawn from a numpy Generator.

``configs/_base_/datasets/ade20k.py``: ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0),
keep_ratio=True)``, ``RandomCrop(crop_size, cat_max_ratio=0.75)``, ``RandomFlip(prob=0.5)``,
``PhotoMetricDistortion()``, then ``SegDataPreProcessor`` (normalise with the mean/std in 0-255 units, pad to
the crop size at the bottom and right with 0 for the image and 255 for the labels). Each step mirrors the
mmcv/mmseg transform of that name; the random draws come from the sample's generator (``sample_rng``) so a
sample of an epoch is the same whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from swinkit.data.segmentation import (
    IGNORE_INDEX,
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    normalize,
    rescale_size,
    resize_image,
    resize_labels,
)

CROP_TRIES = 10  # mmseg RandomCrop: new crops drawn while one class dominates


def random_resize(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """mmcv ``RandomResize(keep_ratio=True)``: the scale times a uniform ratio, then ``imrescale`` (bilinear
    image, nearest labels)."""
    low, high = ratio_range
    ratio = rng.random() * (high - low) + low
    target = int(scale[0] * ratio), int(scale[1] * ratio)
    size = rescale_size(image.shape[1], image.shape[0], target)  # (width, height)
    return resize_image(image, size), resize_labels(labels, size)


def _crop_box(shape: tuple[int, ...], crop: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """(top, left) of a random ``crop`` (height, width) inside ``shape`` (mmseg ``generate_crop_bbox``)."""
    margin_h, margin_w = max(shape[0] - crop[0], 0), max(shape[1] - crop[1], 0)
    return int(rng.integers(0, margin_h + 1)), int(rng.integers(0, margin_w + 1))


def crop_origin(
    labels: np.ndarray,
    crop: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[int, int]:
    """mmseg ``RandomCrop.crop_bbox``: up to 10 redraws while one class (ignore excluded) covers at least
    ``cat_max_ratio`` of the crop or the crop holds one class only; the last draw is kept."""
    top, left = _crop_box(labels.shape, crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_TRIES):
            window = labels[top : top + crop[0], left : left + crop[1]]
            values, counts = np.unique(window, return_counts=True)
            counts = counts[values != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = _crop_box(labels.shape, crop, rng)
    return top, left


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.convert``: ``x * alpha + beta`` clipped to 0..255, truncated to uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PhotoMetricDistortion:
    """mmseg's ``PhotoMetricDistortion`` on an RGB uint8 image: brightness, contrast (second or last, by a
    coin), saturation and hue, each applied with probability 0.5 (HSV as OpenCV's, hue in 0..179)."""

    brightness_delta: float = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(image, alpha=rng.uniform(*self.contrast_range))
        return image

    def _hsv(self, image: np.ndarray, rng: np.random.Generator, channel: int) -> np.ndarray:
        if not rng.integers(2):
            return image
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        if channel == 1:
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*self.saturation_range))
        else:
            shift = int(rng.integers(-self.hue_delta, self.hue_delta))
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + shift) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            image = _convert(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = rng.integers(2) == 1
        if contrast_first:
            image = self._contrast(image, rng)
        image = self._hsv(image, rng, channel=1)
        image = self._hsv(image, rng, channel=0)
        if not contrast_first:
            image = self._contrast(image, rng)
        return image


def pad_to(
    pixels: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, h, w) pixels and (h, w) labels padded at the bottom and right to ``size`` (height, width) with 0
    and 255 (mmseg ``stack_batch``: the pixels are already normalised)."""
    bottom, right = max(size[0] - pixels.shape[1], 0), max(size[1] - pixels.shape[2], 0)
    return F.pad(pixels, (0, right, 0, bottom), value=0.0), F.pad(
        labels, (0, right, 0, bottom), value=IGNORE_INDEX
    )


@dataclass(frozen=True)
class SegmentationTrainTransform:
    """The whole training pipeline: (image (H, W, 3) uint8 RGB, labels (H, W)) -> (pixels (3, c, c) float32,
    labels (c, c) int64) for a square ``crop_size`` c."""

    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip: float = 0.5  # probability of a horizontal flip
    photometric: bool = True  # mmseg's PhotoMetricDistortion
    mean: Sequence[float] = IMAGENET_MEAN_255
    std: Sequence[float] = IMAGENET_STD_255

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crop = (self.crop_size, self.crop_size)
        image, labels = random_resize(image, labels, rng, self.scale, self.ratio_range)
        top, left = crop_origin(labels, crop, rng, self.cat_max_ratio)
        image = image[top : top + crop[0], left : left + crop[1]]
        labels = labels[top : top + crop[0], left : left + crop[1]]
        if rng.random() < self.flip:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if self.photometric:
            image = PhotoMetricDistortion()(np.ascontiguousarray(image), rng)
        pixels = normalize(image, self.mean, self.std)  # (3, h, w)
        target = torch.from_numpy(np.ascontiguousarray(labels)).long()  # (h, w)
        return pad_to(pixels, target, crop)

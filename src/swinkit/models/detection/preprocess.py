"""mmdetection's test pipeline for the Swin COCO detectors: keep-ratio resize, normalise, pad the batch.

Followed: mmdet 3.3 ``datasets/transforms/transforms.py::Resize`` (``keep_ratio=True``: mmcv's ``imrescale``
with cv2 bilinear, then ``scale_factor = (new_w / w, new_h / h)``), mmcv ``image/geometric.py``
(``rescale_size``, ``_scale_size``) and ``DetDataPreprocessor`` (RGB, ``(x - mean) / std`` in float32, each
image padded at the bottom and right with 0 to the batch's largest size rounded up to ``pad_size_divisor``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from swinkit.models.detection.config import MaskRCNNConfig
from swinkit.models.detection.structures import ImageMeta

PROCESSOR_TYPE = "MMDetDetectionPreprocessor"  # image_processor_type of the saved preprocessor config


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's ``rescale_size((w, h), scale)`` for a (long, short) bound tuple: the (new_w, new_h) that fits."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)  # mmcv's _scale_size


@dataclass
class DetectionBatch:
    """A padded, normalised batch and the per-image metas the detector needs."""

    pixel_values: torch.Tensor  # (B, 3, H_pad, W_pad) float32
    image_metas: list[ImageMeta]


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a PIL image or an (H, W, 3) uint8 array (taken as RGB)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shown = getattr(image, "shape", type(image).__name__)
        raise TypeError(f"images must be PIL images or (H, W, 3) uint8 RGB arrays, got {shown}")
    return image


class DetectionPreprocessor:
    """Images (PIL or RGB uint8 arrays) to a :class:`DetectionBatch`, as mmdetection's test pipeline."""

    def __init__(
        self,
        scale: tuple[int, int] = (1333, 800),
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        pad_size_divisor: int = 32,
    ) -> None:
        if min(scale) < 1 or pad_size_divisor < 1:
            raise ValueError(
                f"scale and pad_size_divisor must be positive, got {scale} and {pad_size_divisor}"
            )
        self.scale = (int(scale[0]), int(scale[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad_size_divisor = int(pad_size_divisor)

    @classmethod
    def from_config(cls, config: MaskRCNNConfig) -> DetectionPreprocessor:
        return cls(config.test_scale, config.pixel_mean, config.pixel_std, config.pad_size_divisor)

    def resize(self, image: Image.Image | np.ndarray) -> tuple[np.ndarray, ImageMeta]:
        """The keep-ratio resized (H, W, 3) uint8 image and its meta (mmdet's ``Resize``)."""
        array = _as_rgb_array(image)
        height, width = array.shape[:2]
        new_w, new_h = rescale_size(width, height, self.scale)
        resized = cv2.resize(array, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        meta = ImageMeta((height, width), (new_h, new_w), (new_w / width, new_h / height))
        return resized, meta

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 to the (3, H, W) float32 ``(x - mean) / std``."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # (3, H, W)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std

    def pad(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """mmengine's ``stack_batch``: (3, H_i, W_i) maps padded with 0 to a common multiple of the divisor."""
        d = self.pad_size_divisor
        height = math.ceil(max(x.shape[1] for x in images) / d) * d
        width = math.ceil(max(x.shape[2] for x in images) / d) * d
        batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        for i, x in enumerate(images):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return batch

    def __call__(self, images: Sequence[Image.Image | np.ndarray]) -> DetectionBatch:
        if not images:
            raise ValueError("no images to preprocess")
        resized, metas = zip(*(self.resize(image) for image in images))
        pixel_values = self.pad([self.normalize(r) for r in resized])
        return DetectionBatch(pixel_values=pixel_values, image_metas=list(metas))

    def to_preprocessor_config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (saved next to a model as ``preprocessor_config.json``)."""
        return {
            "image_processor_type": PROCESSOR_TYPE,
            "scale": list(self.scale),
            "keep_ratio": True,
            "interpolation": "bilinear",
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "pad_size_divisor": self.pad_size_divisor,
            "pad_value": 0,
        }

    @classmethod
    def from_preprocessor_config(cls, data: dict[str, Any]) -> DetectionPreprocessor:
        if data.get("image_processor_type") != PROCESSOR_TYPE:
            raise ValueError(
                f"not a detection preprocessor config: image_processor_type is {data.get('image_processor_type')!r}"
            )
        return cls(tuple(data["scale"]), data["image_mean"], data["image_std"], data["pad_size_divisor"])

"""Semantic segmentation data: image and label-map pairs, and mmsegmentation's resize rule.

Three layouts are read (``load_segmentation``): the ADE20K tree (``images/training``, ``annotations/training``,
``images/validation``, ``annotations/validation``; ``.jpg`` images, ``.png`` label maps of the same stem), a
folder holding ``images/`` and ``masks/`` (same stems, any image extension, PNG masks), and a JSONL file of
``{"image_url": ..., "mask_url": ...}`` rows (paths relative to the file's folder). A label map holds one
class index per pixel; 255 is ignored. With ``reduce_zero_label`` (ADE20K) 0 means "other" and becomes 255,
and every other value k becomes k - 1, as mmsegmentation's ``LoadAnnotations(reduce_zero_label=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

IGNORE_INDEX = 255  # label value that carries no loss and no metric
TEST_SCALE = (2048, 512)  # mmseg's ADE20K test Resize(scale=(2048, 512), keep_ratio=True)
_MASK_MODES = ("L", "P", "I", "I;16", "1")  # single-channel integer PIL modes
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)  # SegDataPreProcessor's mean, RGB, 0-255 units
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def rescale_size(width: int, height: int, scale: tuple[int, int] = TEST_SCALE) -> tuple[int, int]:
    """(new_width, new_height) of a ``width`` x ``height`` image fitted into ``scale`` keeping its ratio.

    Mirrors mmcv's ``rescale_size``/``_scale_size``: the long edge at most ``max(scale)``, the short edge at
    most ``min(scale)``, each side ``int(side * factor + 0.5)``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}x{height} pixels cannot be resized")
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image resized to ``size`` (width, height) bilinearly, as mmcv's ``imresize`` (cv2)."""
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) label map resized to ``size`` (width, height) by nearest neighbour, as mmcv's ``imresize``."""
    return cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)


def rescale_image(image: np.ndarray, scale: tuple[int, int] = TEST_SCALE) -> np.ndarray:
    """mmcv's ``imrescale``: ``image`` (H, W, 3) fitted into ``scale`` keeping its ratio, bilinear."""
    height, width = image.shape[:2]
    return resize_image(image, rescale_size(width, height, scale))


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """0 ("other") -> 255, k -> k - 1, 255 stays 255 (mmseg's ``LoadAnnotations(reduce_zero_label=True)``)."""
    out = labels.astype(np.int64)
    out[out == 0] = 256  # 256 - 1 = 255 below
    out = out - 1
    out[out == 254] = IGNORE_INDEX
    return out


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``(x - mean) / std`` in 0-255 units (SegDataPreProcessor)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # (3, H, W)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean_t) / std_t


@dataclass(frozen=True)
class SegmentationProcessor:
    """The evaluation preprocessing of mmseg's test pipeline: keep-ratio resize into ``scale`` (bilinear),
    then normalisation with ``mean``/``std`` in 0-255 units. Label maps stay at the original size."""

    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    scale: tuple[int, int] = TEST_SCALE  # (long, short) bound of mmseg's Resize(keep_ratio=True)
    reduce_zero_label: bool = False  # how the training label maps were read (saved for the record)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, h, w) model input of one RGB image."""
        return normalize(rescale_image(np.asarray(image.convert("RGB")), self.scale), self.mean, self.std)

    def to_preprocessor_config(self) -> dict[str, Any]:
        """transformers' ``SegformerImageProcessor`` fields (what transformers applies: a fixed square
        resize) plus ``mmseg_test_scale``, the keep-ratio scale swinkit applies."""
        short = min(self.scale)
        return {
            "image_processor_type": "SegformerImageProcessor",
            "do_resize": True,
            "size": {"height": short, "width": short},
            "resample": 2,
            "do_rescale": False,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_reduce_labels": self.reduce_zero_label,
            "mmseg_test_scale": list(self.scale),
        }

    @classmethod
    def from_preprocessor_config(cls, config: dict[str, Any]) -> SegmentationProcessor:
        """The processor a saved ``preprocessor_config.json`` describes (``mmseg_test_scale`` or the size)."""
        scale = config.get("mmseg_test_scale")
        if scale is None:
            size = config.get("size") or {}
            short = size.get("shortest_edge") or min(size.get("height", 512), size.get("width", 512))
            scale = (4 * short, short)
        mean, std = config.get("image_mean", IMAGENET_MEAN_255), config.get("image_std", IMAGENET_STD_255)
        if config.get("do_rescale", False):  # mean/std in 0-1 units of a rescaled image
            mean, std = [255 * m for m in mean], [255 * s for s in std]
        return cls(
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            scale=(int(scale[0]), int(scale[1])),
            reduce_zero_label=bool(config.get("do_reduce_labels", config.get("reduce_labels", False))),
        )

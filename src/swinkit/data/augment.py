"""Training augmentation without torchvision: random resized crop, flip, RandAugment, random erasing (per
image, PIL/numpy, driven by an explicit generator) and Mixup/CutMix with label smoothing (per batch, torch).

Every random choice comes from the generator passed in, so a sample's augmentation is a pure function of
that generator's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from swinkit.presets import IMAGENET_MEAN, IMAGENET_STD

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_FILL = (124, 116, 104)  # ImageNet mean colour for pixels geometric ops uncover


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop covering a random area fraction and aspect ratio (Inception crop)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect_now = width / height
    if aspect_now < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect_now > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _level(magnitude: float, maximum: float, rng: np.random.Generator, signed: bool) -> float:
    value = maximum * magnitude / 10.0
    return -value if signed and rng.random() < 0.5 else value


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=_FILL)


# Each op: (image, magnitude 0..10, generator) -> image. Ranges follow timm's RandAugment ("increasing" set).
_OPS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "AutoContrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng: ImageOps.equalize(img),
    "Invert": lambda img, m, rng: ImageOps.invert(img),
    "Rotate": lambda img, m, rng: img.rotate(
        _level(m, 30, rng, True), Image.Resampling.BILINEAR, fillcolor=_FILL
    ),
    "PosterizeIncreasing": lambda img, m, rng: ImageOps.posterize(
        img, max(1, 4 - int(_level(m, 4, rng, False)))
    ),
    "SolarizeIncreasing": lambda img, m, rng: ImageOps.solarize(img, 256 - int(_level(m, 256, rng, False))),
    "SolarizeAdd": lambda img, m, rng: _solarize_add(img, int(_level(m, 110, rng, False))),
    "ColorIncreasing": lambda img, m, rng: ImageEnhance.Color(img).enhance(1 + _level(m, 0.9, rng, True)),
    "ContrastIncreasing": lambda img, m, rng: ImageEnhance.Contrast(img).enhance(
        1 + _level(m, 0.9, rng, True)
    ),
    "BrightnessIncreasing": lambda img, m, rng: ImageEnhance.Brightness(img).enhance(
        1 + _level(m, 0.9, rng, True)
    ),
    "SharpnessIncreasing": lambda img, m, rng: ImageEnhance.Sharpness(img).enhance(
        1 + _level(m, 0.9, rng, True)
    ),
    "ShearX": lambda img, m, rng: _affine(img, (1, _level(m, 0.3, rng, True), 0, 0, 1, 0)),
    "ShearY": lambda img, m, rng: _affine(img, (1, 0, 0, _level(m, 0.3, rng, True), 1, 0)),
    "TranslateXRel": lambda img, m, rng: _affine(
        img, (1, 0, _level(m, 0.45, rng, True) * img.size[0], 0, 1, 0)
    ),
    "TranslateYRel": lambda img, m, rng: _affine(
        img, (1, 0, 0, 0, 1, _level(m, 0.45, rng, True) * img.size[1])
    ),
}


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    array = np.asarray(img).astype(np.int16)
    added = np.clip(array + add, 0, 255)
    return Image.fromarray(np.where(array < threshold, added, array).astype(np.uint8))


def rand_augment(
    img: Image.Image,
    rng: np.random.Generator,
    ops: int = 2,
    magnitude: float = 9.0,
    std: float = 0.5,
    prob: float = 0.5,
) -> Image.Image:
    """RandAugment: ``ops`` operations drawn uniformly, each applied with ``prob`` at a noisy magnitude."""
    names = list(_OPS)
    for choice in rng.choice(len(names), size=ops, replace=True):
        if rng.random() > prob:
            continue
        m = float(np.clip(rng.normal(magnitude, std) if std > 0 else magnitude, 0.0, 10.0))
        img = _OPS[names[int(choice)]](img, m, rng)
    return img


def random_erasing(
    pixels: torch.Tensor, rng: np.random.Generator, prob: float, area: tuple[float, float] = (0.02, 1 / 3)
) -> torch.Tensor:
    """Replace one random rectangle of a normalised (C, H, W) image by standard-normal noise, with ``prob``."""
    if prob <= 0 or rng.random() >= prob:
        return pixels
    channels, height, width = pixels.shape
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            noise = torch.from_numpy(rng.standard_normal((channels, h, w)).astype(np.float32))
            pixels = pixels.clone()
            pixels[:, top : top + h, left : left + w] = noise
            return pixels
    return pixels


@dataclass(frozen=True)
class TrainTransform:
    """Decoded RGB image + generator -> augmented, normalised (3, size, size) float32 tensor."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    hflip: float = 0.5
    randaugment_ops: int = 2
    randaugment_magnitude: float = 9.0
    randaugment_std: float = 0.5
    random_erasing: float = 0.25
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        box = random_resized_crop_box(img.size[0], img.size[1], self.scale, self.ratio, rng)
        img = img.resize((self.size, self.size), _RESAMPLE[self.interpolation], box=box)
        if rng.random() < self.hflip:
            img = ImageOps.mirror(img)
        if self.randaugment_ops > 0:
            img = rand_augment(
                img, rng, self.randaugment_ops, self.randaugment_magnitude, self.randaugment_std
            )
        values = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3)
        values = (values - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        pixels = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))  # (3, H, W)
        return random_erasing(pixels, rng, self.random_erasing)


def soft_targets(
    targets: torch.Tensor, num_classes: int, smoothing: float, multi_label: bool
) -> torch.Tensor:
    """(B,) class indices or (B, C) multi-hot -> (B, C) float targets with label smoothing.

    Multi-class: ``1 - smoothing + smoothing / C`` on the true class, ``smoothing / C`` elsewhere.
    Multi-label: each binary target moves ``smoothing / 2`` towards 0.5.
    """
    if multi_label:
        return targets.float() * (1 - smoothing) + smoothing / 2
    off = smoothing / num_classes
    out = torch.full((targets.shape[0], num_classes), off, device=targets.device)
    return out.scatter_(1, targets.long().view(-1, 1), 1 - smoothing + off)


@dataclass(frozen=True)
class MixupCutmix:
    """Batch-wise Mixup or CutMix (pairing each sample with the batch reversed), then label smoothing."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    multi_label: bool = False

    def __call__(
        self, pixels: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) pixels and targets -> mixed pixels and (B, C) soft targets."""
        soft = soft_targets(targets, self.num_classes, self.label_smoothing, self.multi_label)
        draws = rng.random(4).tolist()
        if (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0) or draws[0] >= self.prob:
            return pixels, soft
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or draws[1] < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        flipped = pixels.flip(0)
        if use_cutmix:
            height, width = pixels.shape[-2:]
            cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
            cy, cx = int(draws[2] * height), int(draws[3] * width)
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
            pixels = pixels.clone()
            pixels[..., top:bottom, left:right] = flipped[..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (height * width)
        else:
            pixels = pixels * lam + flipped * (1 - lam)
        return pixels, soft * lam + soft.flip(0) * (1 - lam)

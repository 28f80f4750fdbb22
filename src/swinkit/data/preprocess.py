"""Evaluation preprocessing, numerically identical to transformers' PIL image processors.

``ImageProcessor`` reproduces, step for step, transformers' ``ViTImageProcessorPil`` (the class the Swin and
Swinv2 checkpoints name) and ``ConvNextImageProcessorPil`` (the class whose configs carry ``crop_pct``):

1. resize with Pillow: ``size`` as ``{"height", "width"}`` resizes straight to it; ``{"shortest_edge": s}``
   resizes the shortest edge to ``s`` keeping the aspect ratio (the long edge truncated, as transformers does);
   in a ConvNext config with ``s < 384`` the shortest edge goes to ``int(s / crop_pct)`` and the image is
   centre-cropped to ``s x s`` (at 384 and more it is resized to ``s x s``);
2. centre crop to ``crop_size`` when ``do_center_crop`` (zero padding where the image is smaller);
3. rescale: ``uint8 -> float64 * rescale_factor -> float32``;
4. normalize: ``(x - mean) / std`` in float32.

A ``crop_pct`` in a ViTImageProcessor config is ignored, as transformers ignores it (a warning says so).

``preprocessing_for`` is the one place that decides a checkpoint's preprocessing: its own preprocessor
config, else its preset's ``Preprocessing``, else ``default_preprocessing``. There ``crop_pct`` None resizes
straight to the input size (the 384 presets, which the official code evaluates without a crop); otherwise
the official evaluation, used by every other preset including the tiny ``swin_micro``/``swinv2_micro``:
resize the shortest edge to ``int(size / crop_pct)`` (256 for 224, 292 for 256, 219 for 192) with bicubic,
then centre crop to the size.
(timm evaluates the same checkpoints with crop_pct 0.9, bicubic; the presets follow the official repository.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from swinkit.presets import OFFICIAL_CROP_PCT, Preprocessing, SwinConfig, get_preset, preset_for_hub_id

log = logging.getLogger(__name__)

_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_CONVNEXT = "ConvNextImageProcessor"
_VIT = "ViTImageProcessor"
# Defaults of the transformers classes, used for the fields a config leaves out.
_STANDARD = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN/STD, both classes' default
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    _VIT: {"size": {"height": 224, "width": 224}, "resample": 2, "default_to_square": True},
    _CONVNEXT: {
        "size": {"shortest_edge": 384},
        "resample": 3,
        "default_to_square": False,
        "crop_pct": 224 / 256,
    },
}


def _size_dict(size: Any, default_to_square: bool) -> dict[str, int]:
    """transformers' ``get_size_dict``: an int, a (height, width) pair or a dict -> a size dict."""
    if isinstance(size, Mapping):
        keys = set(size)
        if keys in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}):
            return {k: int(v) for k, v in size.items()}
        raise ValueError(
            f"unsupported size {dict(size)}: expected height/width or shortest_edge[/longest_edge]"
        )
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, Sequence) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise ValueError(f"unsupported size {size!r}")


def _processor_class(config: Mapping[str, Any]) -> str:
    name = config.get("image_processor_type") or config.get("feature_extractor_type") or _VIT
    name = re.sub(r"(Fast|Pil)$", "", name.replace("FeatureExtractor", "ImageProcessor"))
    if name not in _CLASS_DEFAULTS:
        log.warning("%s is read with the fields ViTImageProcessor understands", name)
        return _VIT
    return name


def _shortest_edge_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """(height, width) with the shortest edge at ``shortest``, the other scaled and truncated (transformers)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest * long / short)
    return (new_long, shortest) if width <= height else (shortest, new_long)


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' ``center_crop`` of an (H, W, C) array, zero-padding where the image is smaller."""
    h, w = array.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return array[top : top + height, left : left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w, array.shape[2]), dtype=array.dtype)
    pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    padded[pad_top : pad_top + h, pad_left : pad_left + w] = array
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return padded[top : top + height, left : left + width]


def _crop_fields(
    kind: str, config: Mapping[str, Any], size: dict[str, int]
) -> tuple[tuple[int, int] | None, float | None]:
    """(crop_size, crop_pct) as the processor class ``kind`` reads them from ``config``."""
    crop_pct = None
    if kind == _CONVNEXT:
        if "shortest_edge" not in size:
            raise ValueError(f"ConvNextImageProcessor needs size.shortest_edge, got {size}")
        crop_pct = float(config.get("crop_pct") or _CLASS_DEFAULTS[kind]["crop_pct"])
    elif config.get("crop_pct") is not None:
        log.warning(
            "crop_pct=%s is ignored: transformers' ViTImageProcessor does not use it", config["crop_pct"]
        )
    if not config.get("do_center_crop"):
        return None, crop_pct
    if config.get("crop_size") is None:
        raise ValueError("the preprocessor config sets do_center_crop but gives no crop_size")
    crop = _size_dict(config["crop_size"], True)
    return (crop["height"], crop["width"]), crop_pct


def _per_channel(value: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, Sequence) else (float(value),) * 3


@dataclass(frozen=True)
class ImageProcessor:
    """Turns an RGB PIL image into the model's normalized (3, H, W) float32 input."""

    size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 3  # PIL filter: 0 nearest, 2 bilinear, 3 bicubic
    do_resize: bool = True
    # (height, width) of the centre crop after resizing; None: no crop
    crop_size: tuple[int, int] | None = None
    crop_pct: float | None = None  # ConvNext rule (see the module docstring); None: plain resize
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any]) -> ImageProcessor:
        """From a transformers ``preprocessor_config.json`` (ViTImageProcessor or ConvNextImageProcessor)."""
        kind = _processor_class(config)
        defaults = _CLASS_DEFAULTS[kind]
        square = config.get("default_to_square", defaults["default_to_square"])
        size = _size_dict(config.get("size", defaults["size"]), square)
        crop_size, crop_pct = _crop_fields(kind, config, size)
        return cls(
            size=size,
            resample=int(config.get("resample", defaults["resample"])),
            do_resize=bool(config.get("do_resize", True)),
            crop_size=crop_size,
            crop_pct=crop_pct,
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            do_normalize=bool(config.get("do_normalize", True)),
            mean=_per_channel(config.get("image_mean", _STANDARD)),
            std=_per_channel(config.get("image_std", _STANDARD)),
        )

    @classmethod
    def from_preprocessing(cls, preprocessing: Preprocessing) -> ImageProcessor:
        """From a preset's ``Preprocessing``: official crop (shortest edge to size/crop_pct) or plain resize."""
        height, width = preprocessing.image_size
        resample = _RESAMPLE[preprocessing.interpolation]
        common = dict(resample=resample, mean=tuple(preprocessing.mean), std=tuple(preprocessing.std))
        if preprocessing.crop_pct is None:
            return cls(size={"height": height, "width": width}, **common)
        shortest = int(min(height, width) / preprocessing.crop_pct)
        return cls(size={"shortest_edge": shortest}, crop_size=(height, width), **common)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it follows the image's aspect ratio."""
        if self.crop_size is not None:
            return self.crop_size
        if self.crop_pct is not None:
            return (self.size["shortest_edge"],) * 2
        return (self.size["height"], self.size["width"]) if "height" in self.size else None

    def describe(self) -> str:
        """One line saying what the processor does, e.g. for ``swinkit models``."""
        steps = []
        if self.do_resize:
            target = self.size.get("shortest_edge")
            if target is None:
                resize = f"resize to {self.size['height']}x{self.size['width']}"
            elif self.crop_pct is None:
                resize = f"resize shortest edge to {target}"
            elif target < 384:
                resize = f"resize shortest edge to {int(target / self.crop_pct)}"
            else:
                resize = f"resize to {target}x{target}"
            filters = {v: k for k, v in _RESAMPLE.items()}
            steps.append(f"{resize} ({filters.get(self.resample, self.resample)})")
            if self.crop_pct is not None and target < 384:
                steps.append(f"centre crop {target}x{target}")
        if self.crop_size is not None:
            steps.append(f"centre crop {self.crop_size[0]}x{self.crop_size[1]}")
        if self.do_normalize:
            steps.append(f"normalize mean {list(self.mean)} std {list(self.std)}")
        return ", ".join(steps)

    def _resize(self, image: Image.Image) -> np.ndarray:
        """The resize step (with the ConvNext crop), as an (H, W, 3) uint8 array."""
        width, height = image.size
        if "height" in self.size:
            return np.asarray(image.resize((self.size["width"], self.size["height"]), resample=self.resample))
        shortest = self.size["shortest_edge"]
        if self.crop_pct is not None and shortest >= 384:
            return np.asarray(image.resize((shortest, shortest), resample=self.resample))
        target = int(shortest / self.crop_pct) if self.crop_pct is not None else shortest
        if "longest_edge" in self.size:
            new_h, new_w = _size_with_longest_edge(height, width, target, self.size["longest_edge"])
        else:
            new_h, new_w = _shortest_edge_size(height, width, target)
        array = np.asarray(image.resize((new_w, new_h), resample=self.resample))
        return _center_crop(array, shortest, shortest) if self.crop_pct is not None else array

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) float32 model input from an RGB image."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}; decode it with decode_image")
        array = self._resize(image) if self.do_resize else np.asarray(image)
        if self.crop_size is not None:
            array = _center_crop(array, *self.crop_size)
        values = array.astype(np.float64) * self.rescale_factor if self.do_rescale else array
        values = values.astype(np.float32)
        if self.do_normalize:
            values = (values - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))  # (H, W, 3) -> (3, H, W)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) from images the processor maps to one size."""
        return torch.stack([self(image) for image in images])

    def to_preprocessor_config(self) -> dict[str, Any]:
        """A ``preprocessor_config.json`` that transformers' processors apply exactly as this one does."""
        out: dict[str, Any] = {
            "image_processor_type": _CONVNEXT if self.crop_pct is not None else _VIT,
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "resample": self.resample,
            "do_center_crop": self.crop_size is not None,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }
        if self.crop_size is not None:
            out["crop_size"] = {"height": self.crop_size[0], "width": self.crop_size[1]}
        if self.crop_pct is not None:
            out["crop_pct"] = self.crop_pct
        return out


def _size_with_longest_edge(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    """transformers' ``get_size_with_aspect_ratio``: shortest edge to ``shortest`` unless the long one exceeds."""
    raw = None
    low, high = float(min(height, width)), float(max(height, width))
    if high / low * shortest > longest:
        raw = longest * low / high
        shortest = int(round(raw))
    if (height <= width and height == shortest) or (width <= height and width == shortest):
        return height, width
    scale = raw if raw is not None else shortest
    if width < height:
        return int(scale * height / width), shortest
    return shortest, int(scale * width / height)


def _hub_id_from_path(path: Path | None) -> str | None:
    """``org/name`` when ``path`` is inside a Hugging Face cache snapshot (``models--org--name/snapshots/...``)."""
    for part in path.parts if path is not None else ():
        if part.startswith("models--"):
            return "/".join(part[len("models--") :].split("--", 1))
    return None


class Described(Protocol):
    """What ``preprocessing_for`` reads of a checkpoint (``swinkit.loading.Checkpoint`` has it)."""

    preprocessing: dict[str, Any] | None  # its own transformers preprocessor config, when it has one
    path: Path | None  # where it was read from

    @property
    def trunk(self) -> SwinConfig:
        """The architecture (its native size sets the default preprocessing)."""
        ...


def default_preprocessing(config: SwinConfig, hub_id: str | None = None) -> Preprocessing:
    """The preset's preprocessing for a hub id, else the official evaluation at the native size.

    The official evaluation resizes the shortest edge to 256/224 of the size and centre crops, except at
    384 and above, where it resizes straight to the size.
    """
    preset = preset_for_hub_id(hub_id) if hub_id else None
    if preset is not None:
        return preset.preprocessing
    crop_pct = None if config.image_size >= 384 else OFFICIAL_CROP_PCT
    return Preprocessing(image_size=(config.image_size, config.image_size), crop_pct=crop_pct)


def preprocessor_config(preprocessing: Preprocessing) -> dict[str, Any]:
    """A transformers ``preprocessor_config.json`` that transformers applies exactly as swinkit does.

    A centre crop needs the ConvNext processor fields (ViTImageProcessor ignores ``crop_pct``).
    """
    return ImageProcessor.from_preprocessing(preprocessing).to_preprocessor_config()


def preprocessing_for(
    source: Described | SwinConfig, *, hub_id: str | None = None, preset: str | None = None
) -> ImageProcessor:
    """The evaluation preprocessing of a checkpoint (or of a bare model config), decided here only.

    In order: the checkpoint's own preprocessor config (its folder's file or its embedded metadata), else
    the preset's (``preset`` by name, else by ``hub_id`` or the hub cache folder it was read from), else
    the official evaluation at the model's native size (``default_preprocessing``).
    """
    if isinstance(source, SwinConfig):
        config, own, path = source, None, None
    else:
        config, own, path = source.trunk, source.preprocessing, source.path
    if own:
        return ImageProcessor.from_preprocessor_config(own)
    if preset is not None:
        return ImageProcessor.from_preprocessing(get_preset(preset).preprocessing)
    hub_id = hub_id or _hub_id_from_path(path)
    return ImageProcessor.from_preprocessing(default_preprocessing(config, hub_id))


def processor_for_checkpoint(checkpoint: Described) -> ImageProcessor:
    """The checkpoint's preprocessing (``preprocessing_for``, kept under this older name)."""
    return preprocessing_for(checkpoint)

"""Semantic segmentation data: image and label-map pairs, and mmsegmentation's resize rule.

Three layouts are read (``load_segmentation``): the ADE20K tree (``images/training``, ``annotations/training``,
``images/validation``, ``annotations/validation``; ``.jpg`` images, ``.png`` label maps of the same stem), a
folder holding ``images/`` and ``masks/`` (same stems, any image extension, PNG masks), and a JSONL file of
``{"image_url": ..., "mask_url": ...}`` rows (paths relative to the file's folder). A label map holds one
class index per pixel; 255 is ignored. With ``reduce_zero_label`` (ADE20K) 0 means "other" and becomes 255,
and every other value k becomes k - 1, as mmsegmentation's ``LoadAnnotations(reduce_zero_label=True)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from swinkit.data.datasets import AugmentedSet, ProcessedSet
from swinkit.data.decode import IMAGE_EXTENSIONS, decode_image
from swinkit.data.records import ImageRecord, resolve_path

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
    """(H, W) label map resized to ``size`` (width, height) by nearest neighbour, as mmcv's ``imresize``;
    int64 out (OpenCV resizes 16-bit maps, which hold any label of up to 65535 classes)."""
    return cv2.resize(labels.astype(np.uint16), size, interpolation=cv2.INTER_NEAREST).astype(np.int64)


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


@dataclass
class SegmentationSet:
    """Image files with their label-map files (``masks[i]`` labels ``images[i]``) and the class names."""

    images: list[str]
    masks: list[str]
    classes: tuple[str, ...]
    reduce_zero_label: bool = False  # label maps store 0 for "other" and k + 1 for class k (ADE20K)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SegmentationSet:
        pick = list(indices)
        return SegmentationSet(
            [self.images[i] for i in pick],
            [self.masks[i] for i in pick],
            self.classes,
            self.reduce_zero_label,
        )

    def summary(self, name: str = "data") -> str:
        zero = ", label 0 ignored (reduce_zero_label)" if self.reduce_zero_label else ""
        return f"{name}: {len(self)} images with label maps, {len(self.classes)} classes{zero}"

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8 RGB, labels (H, W) int64 with 255 ignored) of pair ``index``, checked."""
        with decode_image(self.images[index]) as image:
            pixels = np.asarray(image.convert("RGB"))
        labels = read_label_map(self.masks[index], self.reduce_zero_label)
        if labels.shape != pixels.shape[:2]:
            raise ValueError(
                f"{self.masks[index]}: the mask is {labels.shape[1]}x{labels.shape[0]} pixels but its image "
                f"{self.images[index]} is {pixels.shape[1]}x{pixels.shape[0]}"
            )
        check_label_values(labels, len(self.classes), self.masks[index])
        return pixels, labels


def read_label_map(path: str | os.PathLike, reduce_zero: bool = False) -> np.ndarray:
    """(H, W) int64 class indices of a single-channel integer image (PNG); ``reduce_zero`` as mmseg."""
    with Image.open(path) as mask:
        if mask.mode not in _MASK_MODES:
            raise ValueError(
                f"{path}: a mask must be a single-channel integer image (one class index per pixel), "
                f"but this one has mode {mask.mode} ({len(mask.getbands())} channel(s))"
            )
        labels = np.asarray(mask).astype(np.int64)
    return reduce_zero_label(labels) if reduce_zero else labels


def check_label_values(labels: np.ndarray, num_classes: int, path: str | os.PathLike) -> None:
    """ValueError naming ``path`` when a label is neither a class index (0..num_classes - 1) nor 255."""
    valid = labels[labels != IGNORE_INDEX]
    if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
        bad = int(valid.max() if valid.max() >= num_classes else valid.min())
        raise ValueError(
            f"{path} holds label {bad}, outside the {num_classes} classes (0..{num_classes - 1}, "
            f"{IGNORE_INDEX} ignored)"
        )


def _stem_map(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    }


def folder_pairs(images: Path, masks: Path, image_extensions: Sequence[str]) -> tuple[list[str], list[str]]:
    """(image paths, mask paths) pairing each image with the PNG of the same stem in ``masks``."""
    if not masks.is_dir():
        raise FileNotFoundError(f"no mask folder {masks} next to {images}")
    found = _stem_map(masks, (".png",))
    pairs = []
    for stem, image in _stem_map(images, image_extensions).items():
        if stem not in found:
            raise FileNotFoundError(f"no mask for {image}: expected {masks / (stem + '.png')}")
        pairs.append((str(image), str(found[stem])))
    if not pairs:
        raise ValueError(f"{images} holds no images ({', '.join(image_extensions)})")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def jsonl_pairs(path: Path) -> tuple[list[str], list[str]]:
    """(image paths, mask paths) of a JSONL of ``{"image_url": ..., "mask_url": ...}`` rows, resolved as
    ``swinkit.data.records`` resolves paths (relative to the file's folder)."""
    images, masks = [], []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not JSON: {e}") from None
            if not isinstance(row, dict) or not row.get("image_url") or not row.get("mask_url"):
                raise ValueError(f'{where}: expected an object with "image_url" and "mask_url"')
            for key, out in (("image_url", images), ("mask_url", masks)):
                record = ImageRecord(where, where, str(row[key]), str(path.parent))
                local = resolve_path(record)
                if local is None:
                    what = "mask" if key == "mask_url" else "image"
                    raise FileNotFoundError(
                        f"{where}: {what} {row[key]!r} not found (relative to {path.parent})"
                    )
                out.append(local)
    if not images:
        raise ValueError(f"{path} lists no image and mask pairs")
    return images, masks


def is_ade20k(root: Path) -> bool:
    return (root / "images" / "training").is_dir() and (root / "annotations" / "training").is_dir()


def find_pairs(source: str | os.PathLike, split: str = "training") -> tuple[list[str], list[str]]:
    """(image paths, mask paths) of an ADE20K tree (its ``split``), an images/ + masks/ folder or a JSONL."""
    root = Path(source)
    if root.is_file() and root.suffix.lower() in (".jsonl", ".json"):
        return jsonl_pairs(root)
    if is_ade20k(root):
        return folder_pairs(root / "images" / split, root / "annotations" / split, (".jpg",))
    if (root / "images").is_dir():
        return folder_pairs(root / "images", root / "masks", IMAGE_EXTENSIONS)
    if not root.exists():
        raise FileNotFoundError(f"no such dataset: {root}")
    raise ValueError(
        f"{root} is not a segmentation set: expected an ADE20K tree (images/training, annotations/training), "
        "a folder with images/ and masks/, or a .jsonl of image_url/mask_url rows"
    )


def read_classes(source: str | os.PathLike) -> tuple[str, ...] | None:
    """The class names of ``classes.txt`` (one a line) in the dataset's folder, or None without one."""
    root = Path(source)
    file = (root.parent if root.is_file() else root) / "classes.txt"
    if not file.is_file():
        return None
    names = tuple(line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) < 2:
        raise ValueError(f"{file} names {len(names)} class(es); segmentation needs at least 2")
    return names


def load_segmentation(
    source: str | os.PathLike,
    classes: Sequence[str],
    *,
    reduce_zero: bool | None = None,
    split: str = "training",
) -> SegmentationSet:
    """The pairs of ``source`` (see ``find_pairs``) labelled with ``classes``; ``reduce_zero`` None means
    True for an ADE20K tree (mmseg's ADE20KDataset) and False otherwise. The first pair is read and checked."""
    images, masks = find_pairs(source, split)
    if reduce_zero is None:
        reduce_zero = is_ade20k(Path(source))
    data = SegmentationSet(images, masks, tuple(classes), reduce_zero)
    data.read(0)
    return data


class SegmentationTrainSet(AugmentedSet):
    """Augmented training pairs ``(pixels (3, c, c), labels (c, c))`` of a ``SegmentationSet``; ``transform``
    maps (image, labels, generator) to the pair; ``set_epoch`` changes the draws."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.data.read(index)
        return self.transform(image, labels, self.rng(index))


class SegmentationEvalSet(ProcessedSet):
    """Evaluation pairs ``(pixels (3, h, w) through ``processor``, labels (H, W) at the original size)``."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.data.read(index)
        return self.processor(Image.fromarray(image)), torch.from_numpy(labels)


def collate_pairs(
    items: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Evaluation batches as lists: images of a batch have different sizes."""
    return [item[0] for item in items], [item[1] for item in items]

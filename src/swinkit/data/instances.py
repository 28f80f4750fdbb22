"""Instance annotations (boxes, labels, masks) from a COCO file or Azure ML JSONL, in one representation.

``load_instances(source)`` reads:

* a COCO instances ``.json``: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations``
  (``bbox`` ``[x, y, w, h]`` pixels, ``category_id``, ``iscrowd``, ``segmentation`` polygons, RLE or uncompressed
  RLE) and ``categories``. As mmdetection's ``CocoDataset``: ``cat_ids`` sorted, ``cat2label`` maps them to
  0..K-1 in that order; an annotation marked ``ignore`` is left out.
* an Azure ML ``.jsonl``: per line ``{"image_url", "image_details": {"format", "width", "height"}, "label":
  [{"label", "topX", "topY", "bottomX", "bottomY", "isCrowd", "polygon": [[x, y, ...], ...]}]}``, coordinates
  fractions of the image size (``width``/``height`` may be written ``"499px"``); an object without ``polygon``
  has a box only (object detection data). Labels are the names found, sorted, unless ``labels`` is given.

Every object is checked (``check_object``): a degenerate box (under 1 pixel wide or tall: mmdetection's
``parse_data_info`` rule), a box or polygon point off the image by more than ``TOLERANCE`` pixels, a polygon of
under 3 points, an RLE of another size than its image, an unknown category or label; every image: its size, and
with ``check_files`` that its file exists and has that size. The first problem raises a ValueError naming the
line or annotation id; with ``skip_invalid`` the bad object (or image) is left out and counted (``skipped``).
Masks are kept as written (pixel polygons or RLE) and decoded to bitmaps on demand (``InstanceImage.masks``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swinkit.data.records import ImageRecord, resolve_path

log = logging.getLogger(__name__)

TOLERANCE = 1.0  # pixels a box corner or polygon point may lie outside the image
Segmentation = list[list[float]] | dict[str, Any] | None  # pixel polygons, an RLE, or none (box only)


@dataclass(frozen=True)
class InstanceImage:
    """One annotated image: N objects, boxes ``(N, 4)`` x1, y1, x2, y2 in pixels."""

    image_id: int
    file: str  # the image's path or URL as written
    base: str  # the folder a relative ``file`` is relative to
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64
    labels: np.ndarray  # (N,) int64 label indices
    iscrowd: np.ndarray  # (N,) bool
    areas: np.ndarray  # (N,) float64, COCO's ``area`` (mask area; box area for boxes only)
    segmentations: tuple[Segmentation, ...]  # per object
    where: str  # "FILE image id 3" / "FILE line 4"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_masks(self) -> bool:
        return all(s is not None for s in self.segmentations)

    def path(self) -> str | None:
        """The local image file (``records.resolve_path``: relative to ``base``, Azure URLs by trailing parts)."""
        return resolve_path(ImageRecord(self.file, self.where, reference=self.file, base=self.base))

    def masks(self) -> np.ndarray:
        """(N, height, width) bool bitmaps, decoded as mmdetection's ``LoadAnnotations._poly2mask``."""
        masks = np.zeros((len(self), self.height, self.width), dtype=bool)
        for i, segmentation in enumerate(self.segmentations):
            if segmentation is None:
                raise ValueError(f"{self.where}: object {i} has a box only, no mask")
            masks[i] = decode_segmentation(segmentation, self.height, self.width)
        return masks


def decode_segmentation(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool of pixel polygons (their union), an uncompressed RLE or an RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {**segmentation, "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def segmentation_area(segmentation: Segmentation, height: int, width: int) -> float:
    """The pixel area of a mask, as pycocotools counts it."""
    return float(decode_segmentation(segmentation, height, width).sum())


@dataclass
class InstanceDataset:
    """The images of an instance set and its labels (``category_ids[i]``: the COCO id of ``labels[i]``)."""

    images: list[InstanceImage]
    labels: tuple[str, ...]
    category_ids: tuple[int, ...]
    source: str = ""
    skipped: int = 0  # bad objects and images left out (``skip_invalid``)
    problems: list[str] = field(default_factory=list)  # what was skipped, first ones

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> InstanceImage:
        return self.images[index]

    @property
    def has_masks(self) -> bool:
        """Every object has a mask (instance segmentation data; else object detection)."""
        return all(image.has_masks for image in self.images)

    def object_counts(self) -> dict[str, int]:
        counts = np.bincount(
            np.concatenate([image.labels for image in self.images] or [np.zeros(0, dtype=np.int64)]),
            minlength=len(self.labels),
        )
        return {name: int(c) for name, c in zip(self.labels, counts, strict=True)}

    def summary(self, name: str = "data") -> str:
        """One line per label: its object count, after a line of totals."""
        counts = self.object_counts()
        kind = "masks" if self.has_masks else "boxes only"
        head = (
            f"{name}: {len(self)} images, {sum(counts.values())} objects ({kind}), {len(self.labels)} labels"
        )
        lines = [head + (f"; {self.skipped} bad records skipped" if self.skipped else "")]
        lines += [f"  {label:<24} {count:>7}" for label, count in counts.items()]
        return "\n".join(lines)


class _Checks:
    """Raises on the first problem, or (``skip``) counts and remembers it."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.count, self.messages = skip, 0, []

    def problem(self, message: str) -> None:
        if not self.skip:
            raise ValueError(message)
        self.count += 1
        if len(self.messages) < 20:
            self.messages.append(message)


def _outside(xs: np.ndarray, ys: np.ndarray, width: int, height: int) -> bool:
    return bool(
        (xs < -TOLERANCE).any() | (xs > width + TOLERANCE).any()
        | (ys < -TOLERANCE).any() | (ys > height + TOLERANCE).any()
    )  # fmt: skip


def _polygon_problem(polygons: Any, width: int, height: int) -> str | None:
    if not isinstance(polygons, list) or not polygons:
        return "its polygon must be a list of [x1, y1, x2, y2, ...] lists"
    for polygon in polygons:
        if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
            return "its polygon must be a list of [x1, y1, x2, y2, ...] lists of numbers"
        if len(polygon) < 6 or len(polygon) % 2:
            return f"a polygon has {len(polygon)} coordinates; it needs x, y pairs of at least 3 points"
        points = np.asarray(polygon, dtype=np.float64)
        if not np.isfinite(points).all() or _outside(points[0::2], points[1::2], width, height):
            return f"a polygon lies outside the {width}x{height} image"
    return None


def check_object(box: np.ndarray, segmentation: Any, width: int, height: int) -> str | None:
    """What is wrong with one object (``box`` x1, y1, x2, y2 pixels, ``segmentation`` as stored), or None."""
    if not np.isfinite(box).all():
        return f"its box {box.tolist()} is not finite"
    w, h = box[2] - box[0], box[3] - box[1]
    if w < 1 or h < 1:
        return f"its box is degenerate ({w:g} x {h:g} pixels; a box must be at least 1 pixel wide and tall)"
    if _outside(box[0::2], box[1::2], width, height):
        return f"its box {[round(v, 2) for v in box.tolist()]} lies outside the {width}x{height} image"
    if segmentation is None or isinstance(segmentation, list):
        return None if segmentation is None else _polygon_problem(segmentation, width, height)
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
        return "its segmentation is neither polygons nor an RLE with size and counts"
    if list(segmentation["size"]) != [height, width]:
        return f"its RLE is {segmentation['size']} (height, width) but the image is [{height}, {width}]"
    try:
        decode_segmentation(segmentation, height, width)
    except (ValueError, TypeError, AttributeError):
        return "its RLE counts do not decode to a mask of its size"
    return None


def _image_problem(path: str | None, file: str, width: int, height: int) -> str | None:
    """A missing file or one whose size is not the declared one (read from the header only)."""
    from PIL import Image

    if path is None:
        return f"its image {file} is not found"
    try:
        with Image.open(path) as image:
            size = image.size
    except OSError as e:
        return f"its image {path} cannot be read ({e})"
    if size != (width, height):
        return f"its image {path} is {size[0]}x{size[1]} but the annotations say {width}x{height}"
    return None


def _size(value: Any) -> int | None:
    """A width/height as written: a number or ``"499px"``; None if neither."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(px)?\s*", value)
        return int(match.group(1)) if match else None
    return int(value) if isinstance(value, (int, float)) and value == int(value) else None


def load_instances(
    source: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    skip_invalid: bool = False,
    check_files: bool = True,
) -> InstanceDataset:
    """The images and objects of a COCO ``.json`` or an Azure ML ``.jsonl`` (see the module docstring).

    ``labels`` (a model's) fixes the label order, and a label outside it is an error; ``skip_invalid`` leaves
    bad objects and images out and counts them instead of raising; ``check_files`` opens each image's header.
    """
    from swinkit.data.instance_formats import load_azure_jsonl, load_coco

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such annotation file: {path}")
    checks = _Checks(skip_invalid)
    if path.suffix.lower() == ".json":
        dataset = load_coco(path, labels, checks, check_files)
    elif path.suffix.lower() == ".jsonl":
        dataset = load_azure_jsonl(path, labels, checks, check_files)
    else:
        raise ValueError(f"{path}: instance annotations must be a COCO .json or an Azure ML .jsonl file")
    dataset.skipped, dataset.problems = checks.count, checks.messages
    if checks.count:
        log.warning("%s: %d bad records skipped (first: %s)", path, checks.count, checks.messages[0])
    return dataset

"""One image's detections (``InstancePrediction``) and the forms they are written in.

* ``to_azure()``: the Azure ML endpoint's object, ``{"boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"},
  "label", "score", "polygon": [[x1, y1, x2, y2, ...], ...]}]}``, every coordinate a fraction of the image
  width (x) or height (y); a detection model's boxes have no ``polygon``. An object whose mask is too small
  to outline keeps its box with an empty polygon list.
* ``to_coco(image_id, category_ids)``: COCO results (``bbox`` ``[x, y, w, h]`` in pixels, ``segmentation`` an RLE
  with ``counts`` as text), as mmdetection's ``CocoMetric.results2json`` writes them.
* ``lines()`` for ``swinkit predict``'s table, ``save_image()`` for ``--visualize``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swinkit.ops.polygons import MAX_POINTS, mask_to_normalized_polygons

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class InstancePrediction:
    """The objects found in one image, best first; coordinates in the original image's pixels."""

    boxes: np.ndarray  # (N, 4) float x1, y1, x2, y2
    scores: np.ndarray  # (N,) float in [0, 1]
    labels: np.ndarray  # (N,) int: indices into label_names
    label_names: Sequence[str]  # the model's labels, in label order
    width: int  # the original image's size
    height: int
    masks: np.ndarray | None = None  # (N, height, width) bool; None for a detection (boxes-only) model
    source: str | None = None  # the image path / name
    max_polygon_points: int = MAX_POINTS  # per polygon of ``to_azure``
    _polygons: list[list[list[float]]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.scores)
        assert self.boxes.shape == (n, 4) and self.labels.shape == (n,), (self.boxes.shape, self.labels.shape)
        assert self.masks is None or self.masks.shape == (n, self.height, self.width), self.masks.shape

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        """The label name of each object."""
        return [self.label_names[int(i)] for i in self.labels]

    def normalized_boxes(self) -> np.ndarray:
        """(N, 4) boxes as fractions of the image width and height, clipped to [0, 1]."""
        scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        return np.clip(self.boxes.astype(np.float64) / scale, 0.0, 1.0)

    def polygons(self) -> list[list[list[float]]]:
        """Per object, the outlines of its mask as flat lists of image fractions (``ops.polygons``)."""
        if self.masks is None:
            raise ValueError("a detection model's results have boxes only, no masks to outline")
        if self._polygons is None:
            self._polygons = [
                mask_to_normalized_polygons(mask, max_points=self.max_polygon_points) for mask in self.masks
            ]
        return self._polygons

    def to_azure(self) -> dict[str, list[dict[str, Any]]]:
        """The Azure ML object-detection / instance-segmentation response object of this image."""
        keys = ("topX", "topY", "bottomX", "bottomY")
        objects = [
            {"box": dict(zip(keys, box, strict=True)), "label": name, "score": float(score)}
            for box, name, score in zip(
                self.normalized_boxes().tolist(), self.names, self.scores, strict=True
            )
        ]
        if self.masks is not None:
            for item, outline in zip(objects, self.polygons(), strict=True):
                item["polygon"] = outline
        return {"boxes": objects}

    def to_coco(self, image_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
        """COCO result dicts (``category_ids[label]`` the COCO id of each label), with an RLE per mask."""
        from pycocotools import mask as mask_utils

        rows = []
        for i, (box, score, label) in enumerate(zip(self.boxes, self.scores, self.labels, strict=True)):
            x1, y1, x2, y2 = (float(v) for v in box)
            row = {
                "image_id": image_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],  # mmdet's xyxy2xywh
                "score": float(score),
                "category_id": int(category_ids[int(label)]),
            }
            if self.masks is not None:
                rle = mask_utils.encode(np.asfortranarray(self.masks[i].astype(np.uint8)))
                row["segmentation"] = {
                    "size": [int(s) for s in rle["size"]],
                    "counts": rle["counts"].decode(),
                }
            rows.append(row)
        return rows

    def lines(self) -> list[str]:
        """One ``label  score  x1,y1,x2,y2`` line per object (pixels), best first."""
        if not len(self):
            return ["(no object above the score threshold)"]
        width = max(len(name) for name in self.names)
        return [
            f"{name:<{width}}  {score:6.1%}  box {x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}"
            for name, score, (x1, y1, x2, y2) in zip(
                self.names, self.scores, self.boxes.tolist(), strict=True
            )
        ]

    def save_image(self, image: Image.Image, path: str | os.PathLike) -> Path:
        """``image`` with the masks, boxes, labels and scores drawn on it, as a PNG at ``path``."""
        from swinkit.visualize_instances import save_instances_image

        return save_instances_image(image, self, path)

    def top(self, *, threshold: float | None = None, top_k: int | None = None) -> InstancePrediction:
        """The objects scoring at least ``threshold``, at most ``top_k`` of them (best first)."""
        order = np.argsort(-self.scores, kind="stable")
        if threshold is not None:
            order = order[self.scores[order] >= threshold]
        if top_k is not None:
            order = order[:top_k]
        masks = None if self.masks is None else self.masks[order]
        return InstancePrediction(
            self.boxes[order],
            self.scores[order],
            self.labels[order],
            self.label_names,
            self.width,
            self.height,
            masks,
            self.source,
            self.max_polygon_points,
        )

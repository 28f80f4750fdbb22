"""mmdetection's instance training pipeline and the detector's batches.

Training (``configs/_base_/datasets/coco_instance.py`` ``train_pipeline``): ``LoadAnnotations`` (boxes, masks),
``Resize(scale, keep_ratio=True)`` (boxes scaled and clipped to the new size, masks rescaled nearest),
``RandomFlip(0.5)`` (horizontal), then ``DetDataPreprocessor``'s normalisation and padding to 32 in the collate.
Crowd objects are left out of the targets and images without objects are left out of training
(``filter_empty_gt``), as mmdet does. The 3x recipe's multi-scale + crop pipeline (``det.train_pipeline:
ms_crop``) is :class:`swinkit.data.instance_augment.MultiScaleCrop`; its crops may leave an image no object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from swinkit.data.datasets import sample_rng
from swinkit.data.decode import decode_image
from swinkit.data.instance_augment import Instances, MultiScaleCrop
from swinkit.data.instances import InstanceDataset, InstanceImage
from swinkit.models.detection.preprocess import DetectionPreprocessor
from swinkit.models.detection.structures import ImageMeta


def read_image(image: InstanceImage) -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of an annotated image; a ValueError names a missing file."""
    path = image.path()
    if path is None:
        raise ValueError(f"{image.where}: its image {image.file} is not found")
    return np.asarray(decode_image(path).convert("RGB"))


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """mmdet's horizontal ``bbox_flip``: (N, 4) x1, y1, x2, y2 mirrored in an image ``width`` wide."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


class InstanceTrainSet(Dataset):
    """Augmented training samples: a dict of the normalised (3, h, w) pixels, its meta and its targets."""

    def __init__(
        self,
        data: InstanceDataset,
        processor: DetectionPreprocessor,
        flip: float,
        seed: int,
        multi_scale_crop: MultiScaleCrop | None = None,
    ) -> None:
        keep = [i for i, image in enumerate(data.images) if int((~image.iscrowd).sum()) > 0]
        self.images = [data.images[i] for i in keep]
        self.processor, self.flip, self.seed, self.epoch = processor, flip, seed, 0
        self.with_mask = data.has_masks
        self.multi_scale_crop = (
            multi_scale_crop  # None: the 1x pipeline (resize to the processor's scale, flip)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.multi_scale_crop is not None:
            return self._multi_scale_crop_sample(index)
        image = self.images[index]
        rng = sample_rng(self.seed, self.epoch, index)
        resized, meta = self.processor.resize(read_image(image))
        h, w = meta.img_shape
        kept = ~image.iscrowd
        boxes = image.boxes[kept] * np.array(meta.scale_factor * 2)  # (G, 4) in resized pixels
        boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
        masks = None
        if self.with_mask:
            full = image.masks()[kept].astype(np.uint8)  # (G, H0, W0)
            masks = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in full])
        if rng.random() < self.flip:
            resized, boxes = resized[:, ::-1], flip_boxes(boxes, w)
            masks = masks[:, :, ::-1] if masks is not None else None
        sample = {
            "pixels": self.processor.normalize(resized),
            "meta": meta,
            "boxes": torch.from_numpy(boxes).float(),
            "labels": torch.from_numpy(image.labels[kept]).long(),
        }
        if masks is not None:
            sample["masks"] = torch.from_numpy(np.ascontiguousarray(masks)).bool()
        return sample

    def _multi_scale_crop_sample(self, index: int) -> dict[str, Any]:
        """The sample through the 3x pipeline (its flip replaces the 1x one); ``scale_factor`` is the last
        resize's, as mmdet records it."""
        image = self.images[index]
        kept = ~image.iscrowd
        masks = image.masks()[kept].astype(np.uint8) if self.with_mask else None  # (G, H0, W0)
        pixels = read_image(image)
        start = Instances(pixels, image.boxes[kept].astype(np.float32), image.labels[kept], masks)
        out, factor = self.multi_scale_crop(start, sample_rng(self.seed, self.epoch, index))
        sample = {
            "pixels": self.processor.normalize(out.pixels),
            "meta": ImageMeta(pixels.shape[:2], out.shape, factor),
            "boxes": torch.from_numpy(out.boxes).float().reshape(-1, 4),
            "labels": torch.from_numpy(out.labels).long(),
        }
        if out.masks is not None:
            sample["masks"] = torch.from_numpy(np.ascontiguousarray(out.masks)).bool()
        return sample


class InstanceEvalSet(Dataset):
    """Evaluation samples: the image's COCO id, its normalised (3, h, w) pixels and meta (the test pipeline)."""

    def __init__(self, images: Sequence[InstanceImage], processor: DetectionPreprocessor) -> None:
        self.images, self.processor = list(images), processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        resized, meta = self.processor.resize(Image.fromarray(read_image(image)))
        return {"image_id": image.image_id, "pixels": self.processor.normalize(resized), "meta": meta}


class CollateInstances:
    """Samples to the detector's batch: ``pixel_values`` (B, 3, H_pad, W_pad) padded to the divisor, the
    ``image_metas`` and, for training, ``gt_boxes``/``gt_labels``/``gt_masks`` (masks padded alike)."""

    def __init__(self, processor: DetectionPreprocessor) -> None:
        self.processor = processor

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        pixels = self.processor.pad([s["pixels"] for s in samples])
        batch: dict[str, Any] = {"pixel_values": pixels, "image_metas": [s["meta"] for s in samples]}
        if "image_id" in samples[0]:
            batch["image_ids"] = torch.tensor([s["image_id"] for s in samples])
            return batch
        batch["gt_boxes"] = [s["boxes"] for s in samples]
        batch["gt_labels"] = [s["labels"] for s in samples]
        if "masks" in samples[0]:
            batch["gt_masks"] = [_pad_masks(s["masks"], pixels.shape[2:]) for s in samples]
        return batch


def _pad_masks(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(G, h, w) masks padded with False at the bottom and right to (G, H, W) (``pad_mask=True``)."""
    out = masks.new_zeros((masks.shape[0], *size))
    out[:, : masks.shape[1], : masks.shape[2]] = masks
    return out

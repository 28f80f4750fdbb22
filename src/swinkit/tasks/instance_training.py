"""The training side of the instance segmentation / object detection tasks: data, model start, evaluation.

Data: a COCO ``.json`` or Azure ML ``.jsonl`` for training and (``--val-data``) validation, else a seeded
``val_split`` of the training images. Model: a detection preset, or a saved swinkit detector (``--pretrained``);
fine-tuning to other classes re-initialises exactly the class-dependent layers (``fc_cls``, ``fc_reg``,
``conv_logits``) and keeps every other weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from swinkit.data.instance_formats import to_coco_dict
from swinkit.data.instances import InstanceDataset, load_instances
from swinkit.engine.config import TrainConfig
from swinkit.engine.distributed import DistContext
from swinkit.evaluation.coco import CocoEvaluator
from swinkit.models.detection.config import get_detection_preset
from swinkit.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn

log = logging.getLogger(__name__)

CLASS_LAYERS = ("roi_head.bbox_head.fc_cls.", "roi_head.bbox_head.fc_reg.", "roi_head.mask_head.conv_logits.")


@dataclass
class InstanceData:
    """The run's training and validation instance sets (same labels)."""

    train: InstanceDataset
    val: InstanceDataset


def split_instances(
    data: InstanceDataset, fraction: float, seed: int
) -> tuple[InstanceDataset, InstanceDataset]:
    """(train, validation): a seeded random ``fraction`` of the images held out, at least one each."""
    if len(data) < 2:
        raise ValueError(f"{len(data)} image(s) cannot be split into a training and a validation set")
    order = np.random.default_rng(seed).permutation(len(data))
    held = min(max(1, round(fraction * len(data))), len(data) - 1)
    pick = lambda idx: replace(data, images=[data.images[i] for i in sorted(idx)])  # noqa: E731
    return pick(order[held:].tolist()), pick(order[:held].tolist())


def load_instance_data(config: TrainConfig, with_mask: bool) -> InstanceData:
    """The training set (labels: the data's, sorted) and the validation set; a Mask R-CNN needs masks."""
    train = load_instances(config.data.train)
    if with_mask and not train.has_masks:
        raise ValueError(
            f"{config.data.train} has objects without masks; train the object_detection task on boxes-only data"
        )
    if config.data.val:
        return InstanceData(train, load_instances(config.data.val, labels=train.labels))
    return InstanceData(*split_instances(train, config.data.val_split, config.run.seed))


def refit_classes(model: MaskRCNN, labels: tuple[str, ...]) -> MaskRCNN:
    """``model`` for ``labels``: itself when it already predicts them, else a copy whose ``fc_cls``, ``fc_reg``
    and ``conv_logits`` are freshly initialised (mmdet's init) and every other weight is the model's."""
    if model.config.labels == labels:
        return model
    fresh = build_mask_rcnn(model.config.replace(labels=labels, num_classes=len(labels)))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(CLASS_LAYERS)}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(CLASS_LAYERS) for k in missing), (missing, unexpected)
    log.warning(
        "class-dependent layers re-initialised: the model predicts %d classes, the data has %d (%s)",
        model.num_classes, len(labels), ", ".join(labels[:5]),
    )  # fmt: skip
    return fresh


def build_detector(config: TrainConfig, labels: tuple[str, ...], saved: MaskRCNN | None) -> MaskRCNN:
    """A saved detector refitted to ``labels``, or the preset's detector initialised from ``run.seed``."""
    torch.manual_seed(config.run.seed)
    if saved is not None:
        return refit_classes(saved, labels).train()
    if not config.model.preset:
        raise ValueError(
            "pass --preset NAME (a mask_rcnn_* / faster_rcnn_* preset) or --pretrained SAVED_DETECTOR"
        )
    changes: dict[str, Any] = {"labels": labels, "num_classes": len(labels)}
    if config.model.drop_path_rate is not None:
        backbone = get_detection_preset(config.model.preset).config.backbone
        changes["backbone"] = backbone.replace(drop_path_rate=config.model.drop_path_rate)
    return build_mask_rcnn(get_detection_preset(config.model.preset).config.replace(**changes))


class TrainCocoEvaluator(CocoEvaluator):
    """COCO AP over the evaluation loader's batches (``batch["image_ids"]``) of a validation set."""

    def __init__(self, dataset: InstanceDataset, with_mask: bool, context: DistContext) -> None:
        iou_types = ("bbox", "segm") if with_mask and dataset.has_masks else ("bbox",)
        super().__init__(
            to_coco_dict(dataset), dataset.labels, dataset.category_ids, context, iou_types=iou_types
        )

    def process(self, batch: dict[str, Any], outputs: Sequence[Any]) -> None:
        super().process(batch["image_ids"].tolist(), outputs)

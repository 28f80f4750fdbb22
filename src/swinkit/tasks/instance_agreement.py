"""How far a detector on another runtime or precision is from its fp32 self: COCO AP against fp32 detections.

The int8 export check of the instance tasks (``swinkit.runtime.quantize.AGREEMENT_CHECKS``): the reference
predictor's (torch fp32) detections on the validation images, at its own test rule (score >= ``score_thr``, at
most ``max_per_img``), are the ground truth, and the candidate's detections are scored against them by
``pycocotools.COCOeval`` (``swinkit.evaluation.coco.coco_evaluate``), box AP and, for Mask R-CNN, mask AP. The
reference scores 1.0 against itself, so ``1 - AP`` is the AP a candidate loses (mask AP leaves out the
detections whose mask is empty, on both sides: an empty mask overlaps nothing, not even itself): the measure of quantized
detectors in NNCF's and OpenVINO's accuracy-aware quantization, which compare a quantized model's COCO mAP
with the float model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from swinkit.tasks.instance_results import InstancePrediction


def _ground_truth_rows(prediction: InstancePrediction, image_id: int, start_id: int) -> list[dict[str, Any]]:
    """One image's reference detections as COCO ground-truth annotations (box area, not crowd)."""
    rows = prediction.to_coco(image_id, range(len(prediction.label_names)))
    for offset, row in enumerate(rows):
        del row["score"]
        width, height = row["bbox"][2:]
        row.update(id=start_id + offset, area=float(width * height), iscrowd=0)
    return rows


def detections_as_ground_truth(
    predictions: Sequence[InstancePrediction], labels: Sequence[str]
) -> dict[str, Any]:
    """A COCO dataset dict whose objects are ``predictions``' detections (image ids 0..N-1, category ids the
    label indices)."""
    images, annotations = [], []
    for image_id, prediction in enumerate(predictions):
        images.append({"id": image_id, "width": prediction.width, "height": prediction.height})
        annotations.extend(_ground_truth_rows(prediction, image_id, len(annotations) + 1))
    categories = [{"id": k, "name": name} for k, name in enumerate(labels)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection_agreement(reference: Any, candidate: Any, prepared: Sequence[Any]) -> dict[str, float]:
    """The candidate's COCO AP (IoU 0.5:0.95, and at 0.5) with the reference's detections of the ``prepared``
    images as ground truth: ``bbox_AP``, ``bbox_AP_50`` and, with masks, ``segm_AP``, ``segm_AP_50``."""
    from swinkit.evaluation.coco import coco_evaluate

    expected, got = reference.infer(prepared), candidate.infer(prepared)
    ground_truth = detections_as_ground_truth(expected, reference.labels)
    if not ground_truth["annotations"]:
        raise ValueError(
            f"the fp32 detector finds no object on the {len(prepared)} validation images, so its agreement "
            "cannot be measured; validate on images with objects in them"
        )
    results = [
        row for image_id, p in enumerate(got) for row in p.to_coco(image_id, range(len(p.label_names)))
    ]
    figures: dict[str, float] = {"images": len(prepared), "objects": len(ground_truth["annotations"])}
    for iou_type in ("bbox", "segm") if reference.with_mask else ("bbox",):
        stats, _ = coco_evaluate(_typed_truth(ground_truth, iou_type), _typed(results, iou_type), iou_type)
        figures[f"{iou_type}_AP"], figures[f"{iou_type}_AP_50"] = stats["mAP"], stats["mAP_50"]
    figures["max_score_diff"] = _max_score_diff(expected, got)
    return figures


def _has_pixels(row: dict[str, Any]) -> bool:
    from pycocotools import mask as mask_utils

    return bool(mask_utils.area(row["segmentation"]))


def _typed(rows: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """The result rows one IoU type scores: without masks for box AP (``loadRes`` would take a mask's area for
    a box); for mask AP those whose mask has pixels (an empty mask overlaps nothing, not even itself)."""
    if iou_type == "segm":
        return [r for r in rows if _has_pixels(r)]
    return [{k: v for k, v in r.items() if k != "segmentation"} for r in rows]


def _typed_truth(ground_truth: dict[str, Any], iou_type: str) -> dict[str, Any]:
    """The ground truth one IoU type scores against: for mask AP the objects whose mask has pixels."""
    if iou_type == "bbox":
        return ground_truth
    return {**ground_truth, "annotations": [a for a in ground_truth["annotations"] if _has_pixels(a)]}


def _max_score_diff(expected: Sequence[InstancePrediction], got: Sequence[InstancePrediction]) -> float:
    """The largest score difference of the best detection per image (0 for images where either has none)."""
    diffs = [abs(float(a.scores[0]) - float(b.scores[0])) for a, b in zip(expected, got) if len(a) and len(b)]
    return float(np.max(diffs)) if diffs else 0.0

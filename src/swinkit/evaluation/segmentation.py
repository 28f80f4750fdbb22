"""mmsegmentation 1.x's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``) and its evaluator.

Per image, ``intersect_and_union`` counts, for each class, the pixels where prediction and label agree
(intersection), the union, the predicted pixels and the labelled pixels, ignoring pixels labelled 255. The
four areas are summed over the whole dataset (not averaged per image); then aAcc = sum(intersection) /
sum(label), IoU = intersection / union and Acc = intersection / label per class, and mIoU / mAcc are their
nan-means: a class absent from both predictions and labels has IoU NaN (0 / 0) and is left out, a class
predicted but never labelled has IoU 0 and Acc NaN. Values are fractions in [0, 1]; mmseg prints the same
numbers as percentages rounded to 2 decimals (mIoU 0.4441 here is mmseg's 44.41). The evaluator that
accumulates them over a run's ranks is ``swinkit.tasks.semantic_segmentation.SegmentationEvaluator``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinkit.data.segmentation import IGNORE_INDEX


def intersect_and_union(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(4, num_classes) float64 areas (intersection, union, prediction, label) of one (H, W) prediction
    against its (H, W) label map, as mmseg's ``IoUMetric.intersect_and_union``."""
    keep = label != ignore_index
    pred, label = pred[keep].long(), label[keep].long()
    intersect = torch.bincount(pred[pred == label], minlength=num_classes)[:num_classes]
    area_pred = torch.bincount(pred, minlength=num_classes)[:num_classes]
    area_label = torch.bincount(label, minlength=num_classes)[:num_classes]
    union = area_pred + area_label - intersect
    return torch.stack([intersect, union, area_pred, area_label]).double()


def areas_to_metrics(areas: torch.Tensor) -> dict[str, Any]:
    """aAcc, mIoU, mAcc (floats, NaN when undefined) and per-class IoU and Acc (float64 arrays with NaN) of
    dataset-summed (4, K) areas, as mmseg's ``total_area_to_metrics`` and ``compute_metrics``."""
    intersect, union, _, label = areas.cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = intersect / union, intersect / label
        all_acc = intersect.sum() / label.sum()
    return {
        "aAcc": float(all_acc),
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "IoU": iou,
        "Acc": acc,
    }


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if not np.isnan(values).all() else math.nan


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def per_class_rows(metrics: dict[str, Any], classes: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """{class: {"IoU", "Acc"}} with None for NaN (JSON has no NaN)."""
    return {
        name: {"IoU": _or_none(metrics["IoU"][i]), "Acc": _or_none(metrics["Acc"][i])}
        for i, name in enumerate(classes)
    }


def report_text(report: dict[str, Any]) -> str:
    """The headline line and the per-class IoU / Acc table (fractions; mmseg prints percentages)."""
    lines = [
        f"{report['num_samples']} images: mIoU {report['mIoU']:.4f}  mAcc {report['mAcc']:.4f}  "
        f"aAcc {report['aAcc']:.4f}  (fractions; mmseg prints them x100)"
    ]
    lines.append(f"{'class':<24} {'IoU':>8} {'Acc':>8}")
    for name, row in report["per_class"].items():
        iou, acc = (f"{v:.4f}" if v is not None else "nan" for v in (row["IoU"], row["Acc"]))
        lines.append(f"{name:<24} {iou:>8} {acc:>8}")
    return "\n".join(lines)


def plot_class_iou(per_class: dict[str, dict[str, float | None]], path: str | os.PathLike) -> Path:
    """A horizontal bar per class (its IoU; classes with no IoU are left out), as a PNG at ``path``."""
    from swinkit.engine.plots import _save, plt

    rows = [(name, row["IoU"]) for name, row in per_class.items() if row["IoU"] is not None]
    figure, axis = plt.subplots(figsize=(7, max(2.0, 0.22 * len(rows) + 1)))
    axis.barh([name for name, _ in rows][::-1], [value for _, value in rows][::-1], color="tab:blue")
    axis.set(xlim=(0, 1), xlabel="IoU", title="per-class IoU")
    axis.grid(axis="x", alpha=0.3)
    return _save(figure, path)

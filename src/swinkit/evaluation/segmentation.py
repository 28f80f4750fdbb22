"""mmsegmentation 1.x's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``) and its evaluator.

Per image, ``intersect_and_union`` counts, for each class, the pixels where prediction and label agree
(intersection), the union, the predicted pixels and the labelled pixels, ignoring pixels labelled 255. The
four areas are summed over the whole dataset (not averaged per image); then aAcc = sum(intersection) /
sum(label), IoU = intersection / union and Acc = intersection / label per class, and mIoU / mAcc are their
nan-means: a class absent from both predictions and labels has IoU NaN (0 / 0) and is left out, a class
predicted but never labelled has IoU 0 and Acc NaN. Values are fractions in [0, 1]; mmseg prints the same
numbers as percentages rounded to 2 decimals (mIoU 0.4441 here is mmseg's 44.41).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from swinkit.data.segmentation import IGNORE_INDEX
from swinkit.engine.distributed import DistContext, all_reduce_sum
from swinkit.tasks.base import Evaluator


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


class SegmentationEvaluator(Evaluator):
    """IoUMetric over every rank's images, and the validation cross entropy (mean over labelled pixels).

    ``process(batch, outputs)``: ``batch`` = (pixels, labels) lists, ``outputs`` the (K, H, W) logits of each
    image at its label map's size.
    """

    def __init__(
        self, classes: Sequence[str], context: DistContext, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.classes, self.context, self.ignore_index = tuple(classes), context, ignore_index
        self.reset()

    def reset(self) -> None:
        device = self.context.device
        self.areas = torch.zeros(4, len(self.classes), dtype=torch.float64, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # (summed CE, labelled pixels, images)

    def process(self, batch: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]], outputs: Any) -> None:
        for logits, label in zip(outputs, batch[1], strict=True):
            label = label.to(logits.device).long()
            self.areas += intersect_and_union(logits.argmax(0), label, len(self.classes), self.ignore_index)
            loss = F.cross_entropy(
                logits.float()[None], label[None], ignore_index=self.ignore_index, reduction="sum"
            )
            labelled = (label != self.ignore_index).sum()
            self.sums += torch.stack(
                [loss.double(), labelled.double(), torch.ones((), device=label.device).double()]
            )

    def compute(self) -> dict[str, Any]:
        areas = all_reduce_sum(self.areas, self.context)
        loss, labelled, images = all_reduce_sum(self.sums, self.context).tolist()
        metrics = areas_to_metrics(areas)
        return {
            "loss": loss / max(labelled, 1.0),
            "aAcc": metrics["aAcc"],
            "mIoU": metrics["mIoU"],
            "mAcc": metrics["mAcc"],
            "num_samples": int(images),
            "per_class": per_class_rows(metrics, self.classes),
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

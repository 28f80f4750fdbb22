"""COCO box and mask AP through ``pycocotools.COCOeval``, as mmdetection's ``CocoMetric`` computes it.

``CocoEvaluator`` gathers each image's ``InstancePrediction`` as COCO results (``to_coco``: boxes
``[x, y, w, h]``, RLE masks), every rank's, and scores them against a ground-truth COCO dict (from a COCO file
or an Azure ML JSONL, ``swinkit.data.instance_formats.to_coco_dict``). As ``CocoMetric``: ``maxDets`` is
(100, 300, 1000), and the metrics are ``{bbox,segm}_mAP``, ``_mAP_50``, ``_mAP_75``, ``_mAP_s``, ``_mAP_m``,
``_mAP_l`` (``COCOeval.stats[0:6]``) and ``_AR@100``, ``_AR@300``, ``_AR@1000``, ``_AR_s@1000``, ``_AR_m@1000``,
``_AR_l@1000`` (``stats[6:12]``), as fractions in [0, 1] (mmdet rounds them to 3 decimals; these are not
rounded); per-class AP is the mean of ``precision[:, :, k, area all, maxDets 1000]`` over its defined entries,
as ``CocoMetric(classwise=True)``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swinkit.engine.distributed import DistContext
from swinkit.tasks.base import Evaluator

if TYPE_CHECKING:
    from swinkit.tasks.instance_results import InstancePrediction

MAX_DETS = (100, 300, 1000)  # mmdet CocoMetric's proposal_nums, set as COCOeval.params.maxDets
METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
                "AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000")  # fmt: skip


def _quiet_coco(dataset: dict[str, Any]) -> Any:
    """A ``pycocotools.coco.COCO`` index of ``dataset`` (its progress prints swallowed)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    coco.dataset.setdefault("annotations", [])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(
    ground_truth: dict[str, Any], results: Sequence[dict[str, Any]], iou_type: str
) -> tuple[dict[str, float], np.ndarray | None]:
    """(metrics, COCOeval's precision array (T, R, K, A, M) with K in ``ground_truth["categories"]`` order, or
    None without results) of one ``iou_type``."""
    from pycocotools.cocoeval import COCOeval

    if not results:  # COCO.loadRes refuses an empty list: nothing found is AP 0, as mmdet reports
        return {name: 0.0 for name in METRIC_NAMES}, None
    gt = _quiet_coco(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(list(results)))
        evaluation = COCOeval(gt, dt, iou_type)
        evaluation.params.catIds = [c["id"] for c in ground_truth["categories"]]
        evaluation.params.imgIds = [i["id"] for i in ground_truth["images"]]
        evaluation.params.maxDets = list(MAX_DETS)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = {name: max(float(v), 0.0) for name, v in zip(METRIC_NAMES, evaluation.stats, strict=True)}
    sorted_ids = list(evaluation.params.catIds)  # evaluate() sorts them (np.unique)
    order = [sorted_ids.index(c["id"]) for c in ground_truth["categories"]]
    return stats, evaluation.eval["precision"][:, :, order]  # K in the ground truth's category (label) order


def per_class_ap(precision: np.ndarray | None, labels: Sequence[str], iou_index: int | None = None) -> dict:
    """Each label's AP over the IoU thresholds (or at ``iou_index`` alone): mmdet's classwise table; NaN for a
    label without ground truth."""
    out = {}
    for k, label in enumerate(labels):
        if precision is None:
            out[label] = 0.0
            continue
        p = precision[:, :, k, 0, -1] if iou_index is None else precision[iou_index, :, k, 0, -1]
        p = p[p > -1]
        out[label] = float(np.mean(p)) if p.size else float("nan")
    return out


def pr_curves(precision: np.ndarray | None, labels: Sequence[str]) -> dict[str, tuple[list, list]]:
    """(precision, recall) curves at IoU 0.5: one per label with ground truth, and their mean ("all")."""
    if precision is None:
        return {}
    recall = np.linspace(0.0, 1.0, precision.shape[1]).tolist()  # COCOeval's 101 recall thresholds
    at_50 = precision[0, :, :, 0, -1]  # (R, K)
    curves = {}
    defined = [k for k in range(at_50.shape[1]) if (at_50[:, k] > -1).any()]
    if defined:
        curves["all (IoU 0.5)"] = (np.clip(at_50[:, defined], 0, 1).mean(axis=1).tolist(), recall)
    for k in defined:
        curves[labels[k]] = (np.clip(at_50[:, k], 0, 1).tolist(), recall)
    return curves


def _gather(rows: list[dict[str, Any]], context: DistContext) -> list[dict[str, Any]]:
    """Every rank's result rows, rank by rank (mmengine's ``collect_results``)."""
    if not context.distributed:
        return rows
    import torch.distributed as dist

    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]


def _typed(rows: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """The rows one IoU type scores: boxes without masks; masks without boxes, as mmdet's ``CocoMetric`` pops
    ``bbox`` (with a box, ``loadRes`` would take the box area for the small/medium/large ranges)."""
    if iou_type == "bbox":
        return [{k: v for k, v in r.items() if k != "segmentation"} for r in rows]
    return [{k: v for k, v in r.items() if k != "bbox"} for r in rows if "segmentation" in r]


class CocoEvaluator(Evaluator):
    """COCO AP of detections against ``ground_truth`` (a COCO dict; ``category_ids[label]`` its id of each
    label). ``process(image_ids, predictions)`` per batch, ``compute()`` on every rank."""

    def __init__(
        self,
        ground_truth: dict[str, Any],
        labels: Sequence[str],
        category_ids: Sequence[int],
        context: DistContext | None = None,
        *,
        iou_types: Sequence[str] = ("bbox", "segm"),
    ) -> None:
        self.ground_truth, self.labels, self.category_ids = ground_truth, tuple(labels), tuple(category_ids)
        self.iou_types, self.context = tuple(iou_types), context or DistContext()
        self.precision: dict[str, np.ndarray | None] = {}
        self.reset()

    def reset(self) -> None:
        self.results: list[dict[str, Any]] = []

    def process(self, batch: Sequence[int], outputs: Sequence[InstancePrediction]) -> None:
        """``batch``: the COCO image id of each prediction in ``outputs``."""
        for image_id, prediction in zip(batch, outputs, strict=True):
            self.results.extend(prediction.to_coco(int(image_id), self.category_ids))

    def compute(self) -> dict[str, Any]:
        rows = _gather(self.results, self.context)
        metrics: dict[str, Any] = {"num_images": len(self.ground_truth["images"]), "per_class": {}}
        for iou_type in self.iou_types:
            stats, self.precision[iou_type] = coco_evaluate(
                self.ground_truth, _typed(rows, iou_type), iou_type
            )
            metrics.update({f"{iou_type}_{name}": value for name, value in stats.items()})
            metrics["per_class"][iou_type] = per_class_ap(self.precision[iou_type], self.labels)
        return metrics

    def write_plots(self, directory: str | os.PathLike) -> dict[str, Path]:
        """A precision-recall plot per IoU type (``pr_curves_bbox.png``...) of the last ``compute``."""
        from swinkit.engine import plots

        written = {}
        for iou_type, precision in self.precision.items():
            curves = pr_curves(precision, self.labels)
            if curves:
                path = Path(directory) / f"pr_curves_{iou_type}.png"
                written[f"pr_curves_{iou_type}"] = plots.plot_pr_curves(curves, path)
        return written

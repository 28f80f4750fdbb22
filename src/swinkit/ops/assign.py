"""MaxIoU assignment of ground-truth boxes to anchors or proposals, as mmdetection's ``MaxIoUAssigner``."""

from dataclasses import dataclass

import torch
from torch import Tensor

from swinkit.ops.boxes import box_iou

__all__ = ["AssignResult", "add_gt_to_assignment", "assign_wrt_overlaps", "max_iou_assign"]


@dataclass(frozen=True)
class AssignResult:
    """Which ground truth each of ``n`` boxes is assigned to.

    ``gt_inds (n,)``: -1 ignored, 0 negative (background), ``i + 1`` assigned to ground truth ``i``;
    ``max_overlaps (n,)``: each box's best IoU with any ground truth; ``labels (n,)``: the assigned ground truth's
    label, -1 for unassigned boxes; ``num_gts``: the number of ground-truth boxes.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor


def _low_quality_matches(overlaps: Tensor, min_pos_iou: float, gt_max_assign_all: bool) -> Tensor:
    """For each box, the last ground truth (as mmdet's loop over gts, later ones win) for which the box is a best
    match with IoU ``>= min_pos_iou``, or -1: ``(k, n) -> (n,)``, with ``k >= 1``."""
    num_gts, num_boxes = overlaps.shape
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)  # (k,)
    eligible = gt_max_overlaps >= min_pos_iou  # (k,)
    order = torch.arange(num_gts, device=overlaps.device)
    if gt_max_assign_all:
        best = (overlaps == gt_max_overlaps[:, None]) & eligible[:, None]  # (k, n)
        return (
            torch.where(best, order[:, None], -1).amax(dim=0)
            if num_gts
            else overlaps.new_full((num_boxes,), -1)
        )
    matched = torch.full((num_boxes,), -1, dtype=torch.long, device=overlaps.device)
    return matched.scatter_reduce(0, gt_argmax_overlaps[eligible], order[eligible], reduce="amax")


def assign_wrt_overlaps(
    overlaps: Tensor,
    gt_labels: Tensor,
    pos_iou_thr: float,
    neg_iou_thr: float | tuple[float, float],
    min_pos_iou: float = 0.0,
    match_low_quality: bool = True,
    gt_max_assign_all: bool = True,
) -> AssignResult:
    """Assignment from the IoUs ``(k, n)`` of ``k`` ground truths with ``n`` boxes, as
    ``MaxIoUAssigner.assign_wrt_overlaps``: boxes whose best IoU is in ``[0, neg_iou_thr)`` (or in the
    ``neg_iou_thr`` interval) are negatives, ``>= pos_iou_thr`` positives of their best ground truth; with
    ``match_low_quality`` every ground truth also takes the boxes it overlaps best (IoU ``>= min_pos_iou``)."""
    num_gts, num_boxes = overlaps.size(0), overlaps.size(1)
    assigned = overlaps.new_full((num_boxes,), -1, dtype=torch.long)
    if num_gts == 0 or num_boxes == 0:
        labels = overlaps.new_full((num_boxes,), -1, dtype=torch.long)
        return AssignResult(
            num_gts, assigned.fill_(0) if num_gts == 0 else assigned, overlaps.new_zeros((num_boxes,)), labels
        )
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)  # (n,)
    if isinstance(neg_iou_thr, tuple):
        assigned[(max_overlaps >= neg_iou_thr[0]) & (max_overlaps < neg_iou_thr[1])] = 0
    else:
        assigned[(max_overlaps >= 0) & (max_overlaps < neg_iou_thr)] = 0
    positive = max_overlaps >= pos_iou_thr
    assigned[positive] = argmax_overlaps[positive] + 1
    if match_low_quality:
        matched = _low_quality_matches(overlaps, min_pos_iou, gt_max_assign_all)
        assigned = torch.where(matched >= 0, matched + 1, assigned)
    labels = assigned.new_full((num_boxes,), -1)
    foreground = assigned > 0
    labels[foreground] = gt_labels[assigned[foreground] - 1].long()
    return AssignResult(num_gts, assigned, max_overlaps, labels)


def max_iou_assign(
    boxes: Tensor,
    gt_boxes: Tensor,
    pos_iou_thr: float,
    neg_iou_thr: float | tuple[float, float],
    min_pos_iou: float = 0.0,
    match_low_quality: bool = True,
    gt_max_assign_all: bool = True,
    ignore_iof_thr: float = -1,
    *,
    gt_labels: Tensor | None = None,
    gt_boxes_ignore: Tensor | None = None,
    ignore_wrt_candidates: bool = True,
) -> AssignResult:
    """Assign ``gt_boxes (k, 4)`` to ``boxes (n, 4)`` (anchors or proposals), as ``MaxIoUAssigner.assign``.

    ``gt_labels (k,)`` default to 0 (one class, as the RPN's). Boxes whose IoF with an ignored box exceeds
    ``ignore_iof_thr`` (when it is positive) get IoU -1 with every ground truth, so they end up ignored.
    RPN: ``(0.7, 0.3, 0.3)``; Mask R-CNN RoI head: ``(0.5, 0.5, 0.5)``.
    """
    if gt_labels is None:
        gt_labels = torch.zeros(gt_boxes.size(0), dtype=torch.long, device=gt_boxes.device)
    overlaps = box_iou(gt_boxes, boxes)  # (k, n)
    if (
        ignore_iof_thr > 0
        and gt_boxes_ignore is not None
        and gt_boxes_ignore.numel() > 0
        and boxes.numel() > 0
    ):
        if ignore_wrt_candidates:
            ignore_max = box_iou(boxes, gt_boxes_ignore, mode="iof").max(dim=1).values
        else:
            ignore_max = box_iou(gt_boxes_ignore, boxes, mode="iof").max(dim=0).values
        overlaps[:, ignore_max > ignore_iof_thr] = -1
    return assign_wrt_overlaps(
        overlaps, gt_labels, pos_iou_thr, neg_iou_thr, min_pos_iou, match_low_quality, gt_max_assign_all
    )


def add_gt_to_assignment(result: AssignResult, gt_labels: Tensor) -> AssignResult:
    """The assignment with the ground truths prepended as boxes assigned to themselves (IoU 1), as
    ``AssignResult.add_gt_`` (used when the ground truths are added as proposals)."""
    own = torch.arange(1, len(gt_labels) + 1, dtype=torch.long, device=gt_labels.device)
    return AssignResult(
        result.num_gts,
        torch.cat([own, result.gt_inds]),
        torch.cat([result.max_overlaps.new_ones(len(gt_labels)), result.max_overlaps]),
        torch.cat([gt_labels.long(), result.labels]),
    )

"""Non-maximum suppression: single-class, class-wise batched and mmdetection's multi-class post-processing.

Greedy NMS as mmcv's ``nms_cpu``, vectorised by blocks in score order: a block's boxes are first suppressed by
the boxes already kept (one IoU matrix), then the greedy rule inside the block runs on its precomputed boolean
suppression matrix, one vector OR per surviving box (the host-side reduction of the CUDA bitmask kernel).
"""

import numpy as np
import torch
from torch import Tensor

__all__ = ["batched_nms", "multiclass_nms", "nms"]

_BLOCK = 512


def _pairwise_iou(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor, offset: int) -> Tensor:
    """IoU ``(P, 4), (Q, 4) -> (P, Q)`` with the arithmetic of mmcv's ``nms_cpu`` (no eps: 0 / 0 is NaN)."""
    ax1, ay1, ax2, ay2 = a.unbind(1)
    bx1, by1, bx2, by2 = b.unbind(1)
    w = (torch.min(ax2[:, None], bx2[None, :]) - torch.max(ax1[:, None], bx1[None, :]) + offset).clamp_(min=0)
    h = (torch.min(ay2[:, None], by2[None, :]) - torch.max(ay1[:, None], by1[None, :]) + offset).clamp_(min=0)
    inter = w.mul_(h)  # (P, Q)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _greedy_block(suppress: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Keep flags of one block: each box not yet removed is kept and removes the later boxes it overlaps."""
    removed = removed.copy()
    for i in range(removed.shape[0]):
        if not removed[i]:
            removed |= suppress[i]
    return ~removed


def _greedy_keep(ranked: Tensor, iou_threshold: float, offset: int) -> Tensor:
    """Keep flags ``(N,)`` of greedy NMS over boxes already in rank order ``(N, 4)``, block by block."""
    areas = (ranked[:, 2] - ranked[:, 0] + offset) * (ranked[:, 3] - ranked[:, 1] + offset)
    keep = np.zeros(ranked.size(0), dtype=bool)
    for start in range(0, ranked.size(0), _BLOCK):
        stop = min(start + _BLOCK, ranked.size(0))
        block, block_areas = ranked[start:stop], areas[start:stop]
        kept = torch.from_numpy(np.flatnonzero(keep[:start])).to(ranked.device)
        earlier = (
            _pairwise_iou(ranked[kept], areas[kept], block, block_areas, offset) > iou_threshold
        )  # (K, B)
        inside = _pairwise_iou(block, block_areas, block, block_areas, offset) > iou_threshold  # (B, B)
        keep[start:stop] = _greedy_block(inside.triu_(1).cpu().numpy(), earlier.any(dim=0).cpu().numpy())
    return torch.from_numpy(keep).to(ranked.device)


def _check_inputs(boxes: Tensor, scores: Tensor) -> None:
    if boxes.dim() != 2 or boxes.size(-1) != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms needs boxes of shape (N, 4) and scores of shape (N,), got {tuple(boxes.shape)} and "
            f"{tuple(scores.shape)}."
        )


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
    """Indices of the boxes kept by greedy NMS, in decreasing score order: ``(N, 4), (N,) -> (K,)``.

    Mirrors mmcv's ``nms`` (CPU kernel ``nms_cpu``): the order is ``scores.sort(0, descending=True)``'s (ties as
    that sort breaks them), a box is suppressed by a kept higher-ranked box when their IoU is strictly greater
    than ``iou_threshold``; ``offset`` 1 is the legacy ``+ 1`` on widths and heights.
    """
    _check_inputs(boxes, scores)
    if boxes.size(0) == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.sort(0, descending=True)[1]
    return order[_greedy_keep(boxes[order], iou_threshold, offset)]


def _offset_nms_by_class(boxes_for_nms: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``nms(boxes_for_nms, scores)`` computed class by class in the same global rank order.

    Exact when the class offsets keep the classes apart (every coordinate >= 0): boxes of different classes
    then have zero intersection and never suppress each other, so only same-class pairs need IoUs.
    """
    order = scores.sort(0, descending=True)[1]
    ranked_idxs = idxs[order]
    keep = torch.zeros(order.size(0), dtype=torch.bool, device=order.device)
    for class_id in torch.unique(idxs):
        positions = (ranked_idxs == class_id).nonzero().squeeze(1)
        keep[positions] = _greedy_keep(boxes_for_nms[order[positions]], iou_threshold, 0)
    return order[keep]


def _class_offset_boxes(boxes: Tensor, idxs: Tensor) -> Tensor:
    """Boxes shifted by ``idx * (max coordinate + 1)`` so that boxes of different classes never overlap."""
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return boxes + offsets[:, None]


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    class_agnostic: bool = False,
    split_thr: int = 10000,
) -> tuple[Tensor, Tensor]:
    """NMS applied independently per value of ``idxs``: ``(N, 4), (N,), (N,) -> (dets (K, 5), keep (K,))``.

    Mirrors mmcv's ``batched_nms``: the coordinate-offset trick when there are fewer than ``split_thr`` boxes
    (evaluated class by class in the global score order when every coordinate is >= 0, which gives the same
    result), otherwise one NMS per class and the kept boxes re-sorted by score. ``dets`` rows are
    ``x1, y1, x2, y2, score`` in decreasing score order; ``keep`` indexes the input.
    """
    if boxes.size(0) == 0:
        return boxes.new_zeros((0, 5)), torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes_for_nms = boxes if class_agnostic else _class_offset_boxes(boxes, idxs)
    if boxes_for_nms.size(0) < split_thr:
        separated = not class_agnostic and bool(boxes.min() >= 0)
        keep = (
            _offset_nms_by_class(boxes_for_nms, scores, idxs, iou_threshold)
            if separated
            else nms(boxes_for_nms, scores, iou_threshold)
        )
        kept_scores = scores[keep]
    else:
        total_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            members = (idxs == class_id).nonzero().view(-1)
            total_mask[members[nms(boxes_for_nms[members], scores[members], iou_threshold)]] = True
        keep = total_mask.nonzero().view(-1)
        kept_scores, order = scores[keep].sort(descending=True)
        keep = keep[order]
    return torch.cat([boxes[keep], kept_scores[:, None]], dim=-1), keep


def multiclass_nms(
    multi_bboxes: Tensor,
    multi_scores: Tensor,
    score_thr: float,
    iou_threshold: float,
    max_num: int = -1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Class-wise NMS of per-class detections, as mmdet's ``multiclass_nms`` with ``return_inds=True``.

    ``multi_bboxes`` is ``(n, 4 * C)`` (class-specific) or ``(n, 4)``; ``multi_scores`` is ``(n, C + 1)`` whose last
    (background) column is dropped. Scores strictly above ``score_thr`` enter a batched NMS; the best ``max_num``
    (all when ``max_num <= 0``) are returned as ``dets (k, 5)``, ``labels (k,)`` in ``[0, C)`` and ``keep (k,)``, the
    index of each detection in the flattened ``(n * C)`` box-class list.
    """
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.size(1) > 4:
        bboxes = multi_bboxes.view(multi_scores.size(0), -1, 4)  # (n, C, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)  # (n, C, 4)
    if bboxes.size(1) != num_classes:
        raise ValueError(
            f"multi_bboxes has boxes for {bboxes.size(1)} classes but multi_scores has {num_classes} classes "
            "plus background."
        )
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > score_thr).nonzero().squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        return torch.cat([bboxes, scores[:, None]], -1), labels, inds
    dets, keep = batched_nms(bboxes, scores, labels, iou_threshold)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    return dets, labels[keep], inds[keep]

"""Non-maximum suppression: single-class, class-wise batched and mmdetection's multi-class post-processing.

Greedy NMS as mmcv's ``nms_cpu``, in two vectorised steps. First the suppressing pairs: the boxes are sorted by
``x1`` and cut into tiles; a tile's boxes can only reach an IoU above the threshold with the boxes whose ``x1``
lies within a bound of their own (``_tile_reach``), one contiguous run of the sorted boxes, so one IoU matrix
per tile (mmcv's arithmetic) finds every such pair. Then the greedy rule in score order, block by block: a block's boxes
are removed by the kept boxes of earlier blocks in one vector step, and inside the block only the boxes that
overlap a later one need a (vector) step, the host-side reduction of mmcv's CUDA bitmask kernel.
"""

import numpy as np
import torch
from torch import Tensor

__all__ = ["batched_nms", "multiclass_nms", "nms"]

_TILE = 256  # boxes per IoU tile (rows of one IoU matrix)
_BLOCK = 1024  # ranks per greedy block (a (B, B) boolean matrix)


def _pairwise_iou(
    a: np.ndarray, area_a: np.ndarray, b: np.ndarray, area_b: np.ndarray, offset: int
) -> np.ndarray:
    """IoU ``(P, 4), (Q, 4) -> (P, Q)`` in float32 with the arithmetic of mmcv's ``nms_cpu`` (0 / 0 is NaN).

    NumPy with in-place steps: on CPU its broadcasting element-wise kernels are several times faster than torch's.
    """
    w = np.minimum(a[:, 2, None], b[None, :, 2])
    w -= np.maximum(a[:, 0, None], b[None, :, 0])
    w += np.float32(offset)
    np.maximum(w, np.float32(0), out=w)
    h = np.minimum(a[:, 3, None], b[None, :, 3])
    h -= np.maximum(a[:, 1, None], b[None, :, 1])
    h += np.float32(offset)
    np.maximum(h, np.float32(0), out=h)
    inter = np.multiply(w, h, out=w)  # (P, Q)
    union = np.add(area_a[:, None], area_b[None, :], out=h)
    union -= inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(inter, union, out=inter)


def _tile_reach(sorted_boxes: np.ndarray, offset: int, iou_threshold: float) -> np.ndarray:
    """Per tile of the ``x1``-sorted boxes, the end of the run of later boxes it may suppress: ``-> (T,)``.

    For boxes ``a``, ``b`` with ``x1_a <= x1_b`` and widths ``w = x2 - x1 + offset``, the overlap width is at
    most ``x1_a + w_a - x1_b`` and IoU at most ``overlap width / w_a``, so IoU > t needs
    ``x1_b < x1_a + (1 - t) * w_a``; the bound is widened (1e-3 relative and absolute) so float rounding
    never loses a pair. A negative threshold, which non-overlapping pairs exceed too, prunes nothing.
    """
    n = sorted_boxes.shape[0]
    tiles = (n + _TILE - 1) // _TILE
    if iou_threshold < 0:
        return np.full(tiles, n)
    x1 = sorted_boxes[:, 0].astype(np.float64)
    widths = sorted_boxes[:, 2].astype(np.float64) - x1 + offset
    reach = np.full(tiles * _TILE, -np.inf)
    reach[:n] = x1 + max(0.0, 1.0 - iou_threshold) * widths + 1e-3 * (np.abs(widths) + np.abs(x1) + 1.0)
    reach = reach.reshape(tiles, _TILE).max(axis=1)  # (T,)
    ends = np.searchsorted(x1, reach, side="right")
    return np.where(np.isnan(reach), n, ends)


def _suppressing_pairs(
    ranked: np.ndarray, iou_threshold: float, offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rank pairs ``(a, b)``, ``a < b``, whose IoU exceeds ``iou_threshold``: two ``(E,)`` arrays.

    ``ranked`` is ``(N, 4)`` float32 in rank order; pairs are searched in ``x1`` order (see the module note).
    """
    areas = (ranked[:, 2] - ranked[:, 0] + np.float32(offset)) * (
        ranked[:, 3] - ranked[:, 1] + np.float32(offset)
    )
    x_order = np.argsort(ranked[:, 0], kind="stable")
    boxes, box_areas = ranked[x_order], areas[x_order]  # (N, 4), (N,) in x1 order
    threshold = np.float32(iou_threshold)
    firsts, seconds = [], []
    for tile, end in enumerate(_tile_reach(boxes, offset, iou_threshold).tolist()):
        start = tile * _TILE
        stop = min(start + _TILE, boxes.shape[0])
        iou = _pairwise_iou(
            boxes[start:stop], box_areas[start:stop], boxes[start:end], box_areas[start:end], offset
        )
        rows, cols = np.nonzero(np.triu(iou > threshold, 1))  # each pair once: the later box in x1 order
        firsts.append(x_order[start + rows])
        seconds.append(x_order[start + cols])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(a, b), np.maximum(a, b)


def _greedy_from_pairs(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Keep flags ``(n,)`` of greedy NMS in rank order given its suppressing rank pairs ``first < second``."""
    keep = np.ones(n, dtype=bool)
    by_second = np.argsort(second, kind="stable")
    first, second = first[by_second], second[by_second]
    bounds = np.searchsorted(second, np.arange(0, n + _BLOCK, _BLOCK))
    for block, start in enumerate(range(0, n, _BLOCK)):
        a, b = first[bounds[block] : bounds[block + 1]], second[bounds[block] : bounds[block + 1]] - start
        size = min(_BLOCK, n - start)
        removed = np.zeros(size, dtype=bool)
        earlier = a < start
        removed[b[earlier][keep[a[earlier]]]] = True
        inside = np.zeros((size, size), dtype=bool)
        inside[a[~earlier] - start, b[~earlier]] = True
        for i in np.unique(a[~earlier] - start).tolist():
            if not removed[i]:
                removed |= inside[i]
        keep[start : start + size] = ~removed
    return keep


def _greedy_keep(ranked: Tensor, iou_threshold: float, offset: int) -> Tensor:
    """Keep flags ``(N,)`` of greedy NMS over boxes already in rank order ``(N, 4)``."""
    first, second = _suppressing_pairs(
        ranked.detach().to("cpu", torch.float32).numpy(), iou_threshold, offset
    )
    return torch.from_numpy(_greedy_from_pairs(ranked.size(0), first, second)).to(ranked.device)


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
    (the offset classes lie apart in ``x``, so ``nms``'s overlap pruning never compares two of them), otherwise
    one NMS per class and the kept boxes re-sorted by score. ``dets`` rows are
    ``x1, y1, x2, y2, score`` in decreasing score order; ``keep`` indexes the input.
    """
    if boxes.size(0) == 0:
        return boxes.new_zeros((0, 5)), torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes_for_nms = boxes if class_agnostic else _class_offset_boxes(boxes, idxs)
    if boxes_for_nms.size(0) < split_thr:
        keep = nms(boxes_for_nms, scores, iou_threshold)
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

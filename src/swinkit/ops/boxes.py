"""Box geometry for detection: areas, overlaps, clipping, scaling and the delta (x, y, w, h) coder.

Boxes are ``(N, 4)`` float tensors ``x1, y1, x2, y2`` in pixels, mmdetection 3.x convention: a box's width is
``x2 - x1`` (no ``+ 1``).
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["box_area", "box_iou", "clip_boxes", "decode_deltas", "encode_deltas", "scale_boxes"]


def _check_boxes(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.size(-1) != 4:
        raise ValueError(
            f"{name} must have shape (N, 4) as x1, y1, x2, y2, but it has shape {tuple(boxes.shape)}."
        )


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box: ``(N, 4) -> (N,)``; inverted boxes give negative areas."""
    _check_boxes(boxes, "boxes")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = 1e-6) -> Tensor:
    """Pairwise overlaps ``(N, 4), (M, 4) -> (N, M)``, as mmdet's ``bbox_overlaps`` (``is_aligned=False``).

    ``mode="iou"`` divides the intersection by the union, ``mode="iof"`` by the area of the box of ``boxes1``
    (intersection over foreground); the denominator is clamped to at least ``eps``.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"box_iou mode must be 'iou' or 'iof', not {mode!r}.")
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    rows, cols = boxes1.size(0), boxes2.size(0)
    if rows * cols == 0:
        return boxes1.new_zeros((rows, cols))
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)  # (N, M, 2)
    overlap = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - overlap if mode == "iou" else area1[:, None].expand(rows, cols)
    return overlap / torch.max(union, union.new_tensor([eps]))


def clip_boxes(boxes: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Boxes with x clamped to ``[0, W]`` and y to ``[0, H]``: ``(N, 4 * k) -> (N, 4 * k)``; ``image_shape`` is (H, W)."""
    height, width = image_shape[0], image_shape[1]
    clipped = boxes.clone()
    clipped[..., 0::2] = clipped[..., 0::2].clamp(min=0, max=width)
    clipped[..., 1::2] = clipped[..., 1::2].clamp(min=0, max=height)
    return clipped


def scale_boxes(boxes: Tensor, scale_factor: tuple[float, float]) -> Tensor:
    """Boxes with x multiplied by ``sx`` and y by ``sy``: ``(N, 4) -> (N, 4)``, ``scale_factor = (sx, sy)``."""
    _check_boxes(boxes, "boxes")
    sx, sy = scale_factor
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def encode_deltas(
    proposals: Tensor,
    gt: Tensor,
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Regression targets ``(dx, dy, dw, dh)`` of ``gt`` relative to ``proposals``: ``(N, 4), (N, 4) -> (N, 4)``.

    Mirrors mmdet's ``delta_xywh_bbox_coder.bbox2delta``: centre offsets in units of the proposal's size, log
    size ratios, then ``(delta - means) / stds``.
    """
    if proposals.shape != gt.shape:
        raise ValueError(
            f"encode_deltas needs one gt box per proposal, got {tuple(proposals.shape)} and {tuple(gt.shape)}."
        )
    proposals = proposals.float()
    gt = gt.float()
    px = (proposals[..., 0] + proposals[..., 2]) * 0.5
    py = (proposals[..., 1] + proposals[..., 3]) * 0.5
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]
    gx = (gt[..., 0] + gt[..., 2]) * 0.5
    gy = (gt[..., 1] + gt[..., 3]) * 0.5
    gw = gt[..., 2] - gt[..., 0]
    gh = gt[..., 3] - gt[..., 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


def decode_deltas(
    rois: Tensor,
    deltas: Tensor,
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    max_shape: tuple[int, int] | None = None,
    wh_ratio_clip: float = 16 / 1000,
    clip_border: bool = True,
    add_ctr_clamp: bool = False,
    ctr_clamp: float = 32,
) -> Tensor:
    """Boxes from ``rois`` shifted and scaled by ``deltas``: ``(N, 4), (N, 4 * k) -> (N, 4 * k)``.

    Mirrors mmdet's ``delta_xywh_bbox_coder.delta2bbox``: ``k`` is the number of classes for class-specific
    regression; log size changes are clamped to ``|log(wh_ratio_clip)|``; with ``clip_border`` and a
    ``max_shape`` (H, W) the boxes are clamped to the image.
    """
    _check_boxes(rois, "rois")
    if deltas.dim() != 2 or deltas.size(1) % 4 != 0 or deltas.size(0) != rois.size(0):
        raise ValueError(
            f"deltas must have shape (N, 4 * k) with N = {rois.size(0)} rois, but it has shape {tuple(deltas.shape)}."
        )
    num_boxes, num_classes = deltas.size(0), deltas.size(1) // 4
    if num_boxes == 0:
        return deltas.clone()
    flat = deltas.reshape(-1, 4)  # (N*k, 4)
    denorm = flat * flat.new_tensor(stds).view(1, -1) + flat.new_tensor(means).view(1, -1)
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    rois_ = rois.repeat(1, num_classes).reshape(-1, 4)  # (N*k, 4)
    pxy = (rois_[:, :2] + rois_[:, 2:]) * 0.5
    pwh = rois_[:, 2:] - rois_[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(wh_ratio_clip))
    if add_ctr_clamp:
        dxy_wh = dxy_wh.clamp(min=-ctr_clamp, max=ctr_clamp)
        dwh = dwh.clamp(max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)  # (N*k, 4)
    if clip_border and max_shape is not None:
        boxes = clip_boxes(boxes, max_shape)
    return boxes.reshape(num_boxes, -1)  # (N, 4*k)

"""Instance masks: pasting RoI mask probabilities into the image (mmdet's ``_do_paste_mask``) and mask boxes.

``paste_masks`` reproduces mmdet's CPU path (``FCNMaskHead._predict_by_feat_single`` with one box per chunk and
``skip_empty=True``): each mask is sampled with ``grid_sample`` only over its box grown to whole pixels plus one
pixel on each side, and is False elsewhere. Here the boxes are sorted by region size and each chunk is sampled at once
over its largest region (the pixels beyond a box's own region are dropped), so the numbers are mmdet's.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["masks_to_boxes", "paste_masks"]

_CHUNK_ELEMENTS = 1 << 22  # sampled pixels per chunk (16 MiB of float32)


def _paste_regions(boxes: Tensor, image_shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-left corner and size of each box's paste region in pixels, as ``_do_paste_mask(skip_empty=True)``."""
    img_h, img_w = image_shape
    x0 = (boxes[:, 0].floor() - 1).clamp(min=0).to(torch.int64)
    y0 = (boxes[:, 1].floor() - 1).clamp(min=0).to(torch.int64)
    x1 = (boxes[:, 2].ceil() + 1).clamp(max=img_w).to(torch.int64)
    y1 = (boxes[:, 3].ceil() + 1).clamp(max=img_h).to(torch.int64)
    return x0, y0, (x1 - x0).clamp(min=0), (y1 - y0).clamp(min=0)


def _normalised_axis(start: Tensor, length: int, lo: Tensor, hi: Tensor) -> Tensor:
    """Pixel centres ``start + i + 0.5`` mapped to ``[-1, 1]`` over the box side ``[lo, hi]``: ``-> (N, length)``."""
    pixels = (
        start[:, None].to(torch.float32)
        + torch.arange(length, device=start.device, dtype=torch.float32)
        + 0.5
    )
    coord = (pixels - lo[:, None]) / (hi[:, None] - lo[:, None]) * 2 - 1
    return torch.where(torch.isinf(coord), torch.zeros_like(coord), coord)


def _paste_chunk(
    probs: Tensor, boxes: Tensor, regions: tuple[Tensor, ...], threshold: float
) -> tuple[Tensor, ...]:
    """Sample a chunk of masks over their regions: ``(mask index, row, column)`` of each foreground pixel."""
    x0, y0, width, height = regions
    region_w, region_h = int(width.max()), int(height.max())
    if region_w == 0 or region_h == 0:
        empty = torch.zeros(0, dtype=torch.long, device=probs.device)
        return empty, empty, empty
    boxes = boxes.to(torch.float32)
    img_x = _normalised_axis(x0, region_w, boxes[:, 0], boxes[:, 2])  # (n, Rw)
    img_y = _normalised_axis(y0, region_h, boxes[:, 1], boxes[:, 3])  # (n, Rh)
    n = probs.size(0)
    gx = img_x[:, None, :].expand(n, region_h, region_w)
    gy = img_y[:, :, None].expand(n, region_h, region_w)
    grid = torch.stack([gx, gy], dim=3)  # (n, Rh, Rw, 2)
    sampled = F.grid_sample(probs[:, None].to(torch.float32), grid, align_corners=False)[:, 0]  # (n, Rh, Rw)
    rows = torch.arange(region_h, device=probs.device)[None, :, None] < height[:, None, None]  # (n, Rh, 1)
    cols = torch.arange(region_w, device=probs.device)[None, None, :] < width[:, None, None]  # (n, 1, Rw)
    index, row, col = ((sampled >= threshold) & rows & cols).nonzero(as_tuple=True)
    return index, y0[index] + row, x0[index] + col


def _chunks_by_region_size(areas: Tensor) -> list[Tensor]:
    """Mask indices in chunks of similar region size whose padded regions hold at most ``_CHUNK_ELEMENTS``."""
    order = areas.argsort()
    sorted_areas = areas[order].clamp(min=1).tolist()
    chunks, start = [], 0
    while start < len(sorted_areas):
        stop = start + 1
        while stop < len(sorted_areas) and (stop + 1 - start) * sorted_areas[stop] <= _CHUNK_ELEMENTS:
            stop += 1
        chunks.append(order[start:stop])
        start = stop
    return chunks


def paste_masks(
    mask_probs: Tensor, boxes: Tensor, image_shape: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """Binary image masks from RoI mask probabilities: ``(N, h, w), (N, 4) -> (N, H, W)`` bool.

    ``boxes`` are in the pixels of the ``image_shape`` (H, W) image the masks are pasted into (for mmdet's
    ``rescale=True``, the detections divided by the scale factor and the original image shape). A pixel is
    foreground when the bilinearly resampled probability (``grid_sample``, ``align_corners=False``, zero
    padding) is ``>= threshold``, as mmdet's ``mask_thr_binary``.
    """
    if mask_probs.dim() != 3 or boxes.shape != (mask_probs.size(0), 4):
        raise ValueError(
            f"paste_masks needs mask_probs (N, h, w) and boxes (N, 4), got {tuple(mask_probs.shape)} and {tuple(boxes.shape)}."
        )
    if threshold < 0:
        raise ValueError(f"paste_masks threshold must be >= 0 (mmdet's binary masks), got {threshold}.")
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    out = torch.zeros((mask_probs.size(0), img_h, img_w), dtype=torch.bool, device=mask_probs.device)
    if mask_probs.size(0) == 0:
        return out
    regions = _paste_regions(boxes, (img_h, img_w))
    for part in _chunks_by_region_size(regions[2] * regions[3]):
        index, row, col = _paste_chunk(
            mask_probs[part], boxes[part], tuple(r[part] for r in regions), threshold
        )
        out[part[index], row, col] = True
    return out


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes ``x1, y1, x2 + 1, y2 + 1`` of binary masks, as mmdet's ``BitmapMasks.get_bboxes``:
    ``(N, H, W) -> (N, 4)``; an empty mask gives a zero box."""
    if masks.dim() != 3:
        raise ValueError(f"masks_to_boxes needs masks of shape (N, H, W), got {tuple(masks.shape)}.")
    n, height, width = masks.shape
    if height == 0 or width == 0:
        return torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    x_any = masks.bool().any(dim=1)  # (N, W)
    y_any = masks.bool().any(dim=2)  # (N, H)
    xs = torch.arange(width, device=masks.device)
    ys = torch.arange(height, device=masks.device)
    x1 = torch.where(x_any, xs, width).amin(dim=1)
    y1 = torch.where(y_any, ys, height).amin(dim=1)
    x2 = torch.where(x_any, xs, -1).amax(dim=1) + 1
    y2 = torch.where(y_any, ys, -1).amax(dim=1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)  # (N, 4)
    return torch.where(x_any.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))

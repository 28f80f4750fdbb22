"""Mask head training targets, as mmdetection's ``mask_target_single`` (``BitmapMasks.crop_and_resize``)."""

import torch
from torch import Tensor

from swinkit.ops.roi_align import roi_align

__all__ = ["mask_targets"]


def mask_targets(
    pos_proposals: Tensor,
    pos_assigned_gt_inds: Tensor,
    gt_masks: Tensor,
    mask_size: int | tuple[int, int] = 28,
) -> Tensor:
    """Binary ``mask_size`` targets of the positive proposals: ``(P, 4), (P,), (G, H, W) -> (P, mh, mw)`` float.

    As mmdet: each proposal is clipped to the mask image, the mask of its ground truth ``pos_assigned_gt_inds``
    (0-based) is cut out and resized with RoIAlign (aligned, adaptive sampling, average) and binarised with
    ``>= 0.5``. The ground-truth masks are used in place (RoI ``k`` reads mask ``pos_assigned_gt_inds[k]``).
    """
    size = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
    if pos_proposals.size(0) == 0:
        return pos_proposals.new_zeros((0, *size))
    if gt_masks.dim() != 3 or pos_assigned_gt_inds.shape != pos_proposals.shape[:1]:
        raise ValueError(
            f"mask_targets needs gt_masks (G, H, W) and one gt index per proposal, got {tuple(gt_masks.shape)} "
            f"masks and {tuple(pos_assigned_gt_inds.shape)} indices for {pos_proposals.size(0)} proposals."
        )
    if bool((pos_assigned_gt_inds < 0).any() or (pos_assigned_gt_inds >= gt_masks.size(0)).any()):
        raise ValueError(
            f"mask_targets got a gt index outside [0, {gt_masks.size(0)}) for {gt_masks.size(0)} masks."
        )
    height, width = gt_masks.shape[1:]
    boxes = pos_proposals.to(torch.float32).clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    rois = torch.cat([pos_assigned_gt_inds.to(boxes.dtype)[:, None], boxes], dim=1)  # (P, 5)
    resized = roi_align(gt_masks[:, None].to(torch.float32), rois, size, 1.0, 0, True)[:, 0]  # (P, mh, mw)
    return (resized >= 0.5).float()

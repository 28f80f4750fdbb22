"""Detection ops in plain vectorised PyTorch: box geometry and coding, NMS, RoIAlign, anchors, mask pasting,
and the training targets (MaxIoU assignment, random sampling, mask targets)."""

from swinkit.ops.anchors import (
    base_anchors,
    grid_anchors,
    multi_level_anchors,
    multi_level_valid_flags,
    valid_flags,
)
from swinkit.ops.assign import AssignResult, add_gt_to_assignment, assign_wrt_overlaps, max_iou_assign
from swinkit.ops.boxes import box_area, box_iou, clip_boxes, decode_deltas, encode_deltas, scale_boxes
from swinkit.ops.mask_targets import mask_targets
from swinkit.ops.masks import masks_to_boxes, paste_masks
from swinkit.ops.nms import batched_nms, multiclass_nms, nms
from swinkit.ops.roi_align import map_roi_levels, multi_level_roi_align, roi_align
from swinkit.ops.sample import SamplingResult, random_sample

__all__ = [
    "AssignResult",
    "SamplingResult",
    "add_gt_to_assignment",
    "assign_wrt_overlaps",
    "base_anchors",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_deltas",
    "encode_deltas",
    "grid_anchors",
    "map_roi_levels",
    "mask_targets",
    "masks_to_boxes",
    "max_iou_assign",
    "multi_level_anchors",
    "multi_level_roi_align",
    "multi_level_valid_flags",
    "multiclass_nms",
    "nms",
    "paste_masks",
    "random_sample",
    "roi_align",
    "scale_boxes",
    "valid_flags",
]

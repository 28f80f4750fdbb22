"""Detection ops in plain vectorised PyTorch: box geometry and coding, NMS, RoIAlign, anchors, mask pasting."""

from swinkit.ops.anchors import (
    base_anchors,
    grid_anchors,
    multi_level_anchors,
    multi_level_valid_flags,
    valid_flags,
)
from swinkit.ops.boxes import box_area, box_iou, clip_boxes, decode_deltas, encode_deltas, scale_boxes
from swinkit.ops.masks import masks_to_boxes, paste_masks
from swinkit.ops.nms import batched_nms, multiclass_nms, nms
from swinkit.ops.roi_align import map_roi_levels, multi_level_roi_align, roi_align

__all__ = [
    "base_anchors",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_deltas",
    "encode_deltas",
    "grid_anchors",
    "map_roi_levels",
    "masks_to_boxes",
    "multi_level_anchors",
    "multi_level_roi_align",
    "multi_level_valid_flags",
    "multiclass_nms",
    "nms",
    "paste_masks",
    "roi_align",
    "scale_boxes",
    "valid_flags",
]

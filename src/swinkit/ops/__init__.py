"""Detection ops in plain vectorised PyTorch: box geometry and coding, NMS, RoIAlign, anchors, mask pasting."""

from swinkit.ops.boxes import box_area, box_iou, clip_boxes, decode_deltas, encode_deltas, scale_boxes
from swinkit.ops.nms import batched_nms, multiclass_nms, nms

__all__ = [
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_deltas",
    "encode_deltas",
    "multiclass_nms",
    "nms",
    "scale_boxes",
]

"""Instance segmentation and object detection: Mask R-CNN / Faster R-CNN + FPN with a Swin backbone
(mmdetection 3.3 numbers)."""

from swinkit.models.detection.coco import COCO_CLASSES
from swinkit.models.detection.config import (
    DETECTION_PRESETS,
    DetectionPreset,
    MaskRCNNConfig,
    get_detection_preset,
)
from swinkit.models.detection.fpn import FPN
from swinkit.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn, create_mask_rcnn, mask_rcnn_flops
from swinkit.models.detection.preprocess import DetectionBatch, DetectionPreprocessor
from swinkit.models.detection.roi_heads import FCNMaskHead, Shared2FCBBoxHead, StandardRoIHead
from swinkit.models.detection.rpn import RPNHead
from swinkit.models.detection.structures import DetectionOutput, Detections, DetectionTargets, ImageMeta

__all__ = [
    "COCO_CLASSES",
    "DETECTION_PRESETS",
    "DetectionBatch",
    "DetectionOutput",
    "DetectionPreprocessor",
    "DetectionPreset",
    "DetectionTargets",
    "Detections",
    "FCNMaskHead",
    "FPN",
    "ImageMeta",
    "MaskRCNN",
    "MaskRCNNConfig",
    "RPNHead",
    "Shared2FCBBoxHead",
    "StandardRoIHead",
    "build_mask_rcnn",
    "create_mask_rcnn",
    "get_detection_preset",
    "mask_rcnn_flops",
]

"""mmdetection's ``train_cfg`` of Mask R-CNN (``configs/_base_/models/mask-rcnn_r50_fpn.py``): the RPN and RoI
assigners and samplers, the training proposals and the mask target size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectionTrainConfig:
    """The training-time rules of a two-stage detector (mmdet 3.3 Mask R-CNN values)."""

    rpn_pos_iou_thr: float = 0.7  # anchors with IoU >= this are positives
    rpn_neg_iou_thr: float = 0.3  # anchors whose best IoU is below this are negatives
    rpn_min_pos_iou: float = 0.3  # a ground truth takes its best anchors (low-quality matches) from this IoU
    rpn_num: int = 256  # anchors sampled per image
    rpn_pos_fraction: float = 0.5  # at most this fraction of them positive
    proposal_nms_pre: int = 2000  # training proposals: kept per level before NMS
    proposal_iou_threshold: float = 0.7  # training proposals: NMS IoU
    proposal_max_per_img: int = 1000  # training proposals per image after NMS
    rcnn_pos_iou_thr: float = 0.5  # RoIs with IoU >= this are positives
    rcnn_neg_iou_thr: float = 0.5  # RoIs whose best IoU is below this are negatives
    rcnn_min_pos_iou: float = 0.5  # low-quality matches of the RoI assigner from this IoU
    rcnn_match_low_quality: bool = True  # mmdet's Mask R-CNN rcnn assigner sets match_low_quality=True
    rcnn_num: int = 512  # RoIs sampled per image (ground truths added as proposals)
    rcnn_pos_fraction: float = 0.25  # at most this fraction of them positive
    mask_size: int = 28  # side of the mask targets

    def __post_init__(self) -> None:
        for name in ("rpn_pos_fraction", "rcnn_pos_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("rpn_num", "rcnn_num", "proposal_nms_pre", "proposal_max_per_img", "mask_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

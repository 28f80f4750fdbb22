"""Mask R-CNN / Faster R-CNN + FPN + Swin configuration and the presets of mmdetection's Swin COCO table.

The numbers follow mmdetection 3.3: ``configs/_base_/models/mask-rcnn_r50_fpn.py`` (FPN 256 x 5 levels, RPN
anchors and test cfg, RoI heads and their test cfg), ``configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``
(Swin-T, drop path 0.2, out_indices 0-3) and ``configs/_base_/datasets/coco_instance.py`` (the test pipeline:
keep-ratio resize to 1333x800, mmdet's ``DetDataPreprocessor`` mean/std in RGB, padding to 32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swinkit.models.detection.coco import COCO_CLASSES
from swinkit.models.nested_config import config_from_dict, config_to_dict, label_names, replace_labelled
from swinkit.presets import SwinConfig, lookup_preset


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Architecture, test-time rules and preprocessing of a two-stage detector on a Swin backbone."""

    backbone: SwinConfig  # the Swin trunk, detection convention, every stage's output norm
    num_classes: int = 80  # object classes (the box classifier has one more: background)
    with_mask: bool = True  # Mask R-CNN (FCN mask head); False: Faster R-CNN
    fpn_channels: int = 256  # FPN output channels (also RPN and RoI feature width)
    num_outs: int = 5  # FPN levels: one per backbone stage plus max-pooled extra levels
    anchor_scales: tuple[float, ...] = (8.0,)  # anchor side in units of the level stride
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height / width
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)  # stride of each FPN level
    rpn_nms_pre: int = 1000  # proposals kept per level (by score) before NMS
    rpn_iou_threshold: float = 0.7  # NMS IoU of the proposals (separately per level)
    rpn_max_per_img: int = 1000  # proposals per image after NMS
    rpn_min_bbox_size: float = 0.0  # proposals with width or height not above this are dropped
    roi_strides: tuple[int, ...] = (4, 8, 16, 32)  # strides of the FPN levels RoIs are pooled from
    roi_finest_scale: int = 56  # RoI scale mapped to the first level (mmdet's SingleRoIExtractor)
    bbox_roi_size: int = 7  # RoIAlign output side for the box head
    mask_roi_size: int = 14  # RoIAlign output side for the mask head
    fc_channels: int = 1024  # width of the box head's shared fully connected layers
    num_shared_fcs: int = 2  # shared fully connected layers of the box head (Shared2FCBBoxHead)
    bbox_target_means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)  # box coder means of the RoI head
    bbox_target_stds: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)  # box coder stds of the RoI head
    mask_num_convs: int = 4  # 3x3 convolutions of the FCN mask head
    mask_channels: int = 256  # width of the mask head's convolutions and deconvolution
    score_threshold: float = 0.05  # detections scoring at most this are dropped
    iou_threshold: float = 0.5  # class-wise NMS IoU of the detections
    max_per_img: int = 100  # detections kept per image
    mask_threshold: float = 0.5  # mask probability at or above which a pixel is inside
    test_scale: tuple[int, int] = (1333, 800)  # keep-ratio resize target (long side, short side) bounds
    pixel_mean: tuple[float, ...] = (123.675, 116.28, 103.53)  # RGB mean subtracted from 0-255 pixels
    pixel_std: tuple[float, ...] = (58.395, 57.12, 57.375)  # RGB std dividing the centred pixels
    pad_size_divisor: int = 32  # the batch is padded (with 0 after normalisation) to multiples of this
    labels: tuple[str, ...] | None = None  # class names in output order

    def __post_init__(self) -> None:
        if self.backbone.version != 1:
            raise ValueError(
                "the detector here is mmdetection's, on a Swin v1 backbone; the config is Swin v2"
            )
        if self.num_classes < 1:
            raise ValueError(f"a detector needs at least 1 class, got num_classes={self.num_classes}")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels given for {self.num_classes} classes")
        if self.num_outs < self.backbone.num_stages:
            raise ValueError(
                f"num_outs {self.num_outs} is fewer than the backbone's {self.backbone.num_stages} stages"
            )
        if len(self.anchor_strides) != self.num_outs:
            raise ValueError(
                f"{len(self.anchor_strides)} anchor strides given for {self.num_outs} FPN levels"
            )
        if len(self.roi_strides) > self.num_outs:
            raise ValueError(f"{len(self.roi_strides)} RoI strides given for {self.num_outs} FPN levels")
        for name in ("bbox_target_means", "bbox_target_stds"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"{name} must have 4 entries (x, y, w, h), got {getattr(self, name)}")
        if len(self.pixel_mean) != self.backbone.in_channels or len(self.pixel_std) != len(self.pixel_mean):
            raise ValueError("pixel_mean and pixel_std need one entry per input channel")
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @property
    def label_names(self) -> tuple[str, ...]:
        return label_names(self.labels, self.num_classes)

    @property
    def architecture(self) -> str:
        """``"MaskRCNN"`` or ``"FasterRCNN"`` (mmdetection's detector type)."""
        return "MaskRCNN" if self.with_mask else "FasterRCNN"

    def replace(self, **changes: Any) -> MaskRCNNConfig:
        """A copy with some fields changed (validated again); new ``labels`` set ``num_classes``."""
        return replace_labelled(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskRCNNConfig:
        return config_from_dict(cls, data)


@dataclass(frozen=True)
class DetectionPreset:
    """A row of mmdetection's Swin COCO table: architecture, training recipe, scores and download."""

    name: str
    config: MaskRCNNConfig
    mmdet_config: str | None  # the mmdetection 3.x config file name (configs/swin/)
    schedule: str  # "1x" (12 epochs) or "3x" (36 epochs, multi-scale crop training)
    box_ap: float | None = None  # COCO val2017 box AP (mmdet table)
    mask_ap: float | None = None  # COCO val2017 mask AP
    checkpoint_url: str | None = None  # the mmdetection checkpoint
    description: str = ""


_SIZES = {
    "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
}
_DOWNLOAD = "https://download.openmmlab.com/mmdetection/v2.0/swin/"
# (size, 3.x config tail, 2.x run name tail, file stamp, box AP, mask AP), configs/swin/README.md
_ROWS = [
    ("t", "1x_coco", "1x_coco", "20210902_120937-9d6b7cfa", 42.7, 39.3),
    ("t", "ms-crop-3x_coco", "ms-crop-3x_coco", "20210906_131725-bacf6f7b", 46.0, 41.6),
    ("t", "amp-ms-crop-3x_coco", "fp16_ms-crop-3x_coco", "20210908_165006-90a4008c", 46.0, 41.7),
    ("s", "amp-ms-crop-3x_coco", "fp16_ms-crop-3x_coco", "20210903_104808-b92c91f1", 48.2, 43.2),
]


def swin_backbone_config(size: str) -> SwinConfig:
    """The mmdet Swin backbone: ImageNet-1K 224 window 7 trunk, drop path 0.2, no classifier."""
    return SwinConfig(image_size=224, window_size=7, drop_path_rate=0.2, **_SIZES[size])


def _coco_config(backbone: SwinConfig, **fields: Any) -> MaskRCNNConfig:
    return MaskRCNNConfig(backbone=backbone, num_classes=len(COCO_CLASSES), labels=COCO_CLASSES, **fields)


def _zoo_preset(row: tuple) -> DetectionPreset:
    size, tail, run_tail, stamp, box_ap, mask_ap = row
    run = f"mask_rcnn_swin-{size}-p4-w7_fpn_{run_tail}"
    schedule = "1x" if tail.startswith("1x") else "3x"
    name = f"mask_rcnn_swin_{size}_{tail.replace('-', '_')}"
    recipe = (
        "1x" if schedule == "1x" else "3x multi-scale crop" + (", mixed precision" if "amp" in tail else "")
    )
    return DetectionPreset(
        name=name,
        config=_coco_config(swin_backbone_config(size)),
        mmdet_config=f"mask-rcnn_swin-{size}-p4-w7_fpn_{tail}.py",
        schedule=schedule,
        box_ap=box_ap,
        mask_ap=mask_ap,
        checkpoint_url=f"{_DOWNLOAD}{run}/{run}_{stamp}.pth",
        description=f"Mask R-CNN Swin-{size.upper()} FPN COCO, {recipe}, ImageNet-1K 224 pretrained",
    )


def _extra_presets() -> list[DetectionPreset]:
    micro = SwinConfig(
        image_size=64,
        window_size=4,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        drop_path_rate=0.1,
    )
    small_heads = dict(fpn_channels=32, fc_channels=64, mask_channels=32)
    return [
        DetectionPreset(
            name="faster_rcnn_swin_t_1x_coco",
            config=_coco_config(swin_backbone_config("t"), with_mask=False),
            mmdet_config=None,
            schedule="1x",
            description="Faster R-CNN Swin-T FPN COCO (the Mask R-CNN 1x parts without the mask head)",
        ),
        DetectionPreset(
            name="mask_rcnn_swin_micro",
            config=_coco_config(micro, **small_heads),
            mmdet_config=None,
            schedule="1x",
            description="small CPU Mask R-CNN for tests and demos (COCO classes)",
        ),
        DetectionPreset(
            name="faster_rcnn_swin_micro",
            config=_coco_config(micro, with_mask=False, **small_heads),
            mmdet_config=None,
            schedule="1x",
            description="small CPU Faster R-CNN for tests and demos (COCO classes)",
        ),
    ]


def _build_presets() -> dict[str, DetectionPreset]:
    presets = [_zoo_preset(row) for row in _ROWS] + _extra_presets()
    return {p.name: p for p in presets}


DETECTION_PRESETS: dict[str, DetectionPreset] = _build_presets()


def get_detection_preset(name: str) -> DetectionPreset:
    """The detection preset called ``name``; a ValueError names close matches when it does not exist."""
    return lookup_preset(DETECTION_PRESETS, name, "detection preset")

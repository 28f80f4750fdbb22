"""Semantic segmentation: UPerNet with a Swin backbone (mmsegmentation 1.x numbers)."""

from swinkit.models.segmentation.ade20k import ADE20K_CLASSES
from swinkit.models.segmentation.config import (
    SEGMENTATION_PRESETS,
    SegmentationPreset,
    UperNetConfig,
    get_segmentation_preset,
)
from swinkit.models.segmentation.heads import FCNHead, UPerHead
from swinkit.models.segmentation.losses import segmentation_cross_entropy
from swinkit.models.segmentation.upernet import (
    SegmentationOutput,
    UperNet,
    build_upernet,
    create_upernet,
    upernet_flops,
)

__all__ = [
    "ADE20K_CLASSES",
    "FCNHead",
    "SEGMENTATION_PRESETS",
    "SegmentationOutput",
    "SegmentationPreset",
    "UPerHead",
    "UperNet",
    "UperNetConfig",
    "build_upernet",
    "create_upernet",
    "get_segmentation_preset",
    "segmentation_cross_entropy",
    "upernet_flops",
]

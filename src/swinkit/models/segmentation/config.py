"""UPerNet + Swin configuration and the presets of mmsegmentation's Swin ADE20K model zoo.

The numbers follow mmsegmentation 1.x: ``configs/_base_/models/upernet_swin.py`` and
``configs/swin/swin-*_upernet_8xb2-160k_ade20k-512x512.py`` (drop path 0.3 for every size, UPerHead with
512 channels, FCN auxiliary head on stage 3 with 256 channels and loss weight 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swinkit.models.nested_config import config_from_dict, config_to_dict, label_names, replace_labelled
from swinkit.models.segmentation.ade20k import ADE20K_CLASSES
from swinkit.presets import SwinConfig, lookup_preset


@dataclass(frozen=True)
class UperNetConfig:
    """Architecture and loss settings of a Swin backbone with a UPerHead and an optional FCN auxiliary head."""

    backbone: SwinConfig  # the Swin trunk, run in the detection convention with every stage's output norm
    num_classes: int  # classes predicted per pixel
    channels: int = 512  # width of the UPerHead (PPM branches, laterals, FPN convs, fpn_bottleneck)
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)  # adaptive-average-pool output sides of the PPM branches
    use_auxiliary_head: bool = True  # the FCN auxiliary head (training signal; its logits are optional)
    aux_channels: int = 256  # width of the auxiliary head's convolutions
    aux_in_index: int = 2  # backbone stage the auxiliary head reads (2: stride 16)
    aux_num_convs: int = 1  # 3x3 ConvModules in the auxiliary head
    aux_concat_input: bool = False  # concatenate the auxiliary head's input before its classifier
    aux_weight: float = 0.4  # weight of the auxiliary cross entropy in the total loss
    dropout: float = 0.1  # Dropout2d rate before each head's 1x1 classifier (conv_seg)
    align_corners: bool = False  # align_corners of every bilinear resize
    ignore_index: int = 255  # label value that carries no loss
    avg_non_ignore: bool = False  # mmseg default: mean over all pixels (ignored count as 0); True: as PyTorch
    labels: tuple[str, ...] | None = None  # class names in output order

    def __post_init__(self) -> None:
        if self.backbone.version != 1:
            raise ValueError("UperNet here is mmsegmentation's, on a Swin v1 backbone; the config is Swin v2")
        if self.num_classes < 2:
            raise ValueError(
                f"a segmentation model needs at least 2 classes, got num_classes={self.num_classes}"
            )
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels given for {self.num_classes} classes")
        if not self.pool_scales or any(s < 1 for s in self.pool_scales):
            raise ValueError(f"pool_scales must be positive pool sizes, got {self.pool_scales}")
        if not 0 <= self.aux_in_index < self.backbone.num_stages:
            raise ValueError(
                f"aux_in_index {self.aux_in_index} names no stage of a {self.backbone.num_stages}-stage backbone"
            )
        if self.aux_num_convs < 1:
            raise ValueError(f"the auxiliary head needs at least one convolution, got {self.aux_num_convs}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def in_channels(self) -> int:
        """Channels of the input image."""
        return self.backbone.in_channels

    @property
    def label_names(self) -> tuple[str, ...]:
        return label_names(self.labels, self.num_classes)

    def replace(self, **changes: Any) -> UperNetConfig:
        """A copy with some fields changed (validated again); new ``labels`` set ``num_classes``."""
        return replace_labelled(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UperNetConfig:
        return config_from_dict(cls, data, _backbone_from_dict)


def _backbone_from_dict(data: dict[str, Any]) -> SwinConfig:
    """The backbone's SwinConfig from ``to_dict``'s mapping; files written while SwinConfig still carried the
    classifier's fields hold them as a headless classifier's (0 classes), which tell nothing here."""
    legacy = {"num_classes": 0, "problem_type": "single_label_classification", "labels": None}
    for key, empty in legacy.items():
        if key in data and data.pop(key) != empty:
            raise ValueError(
                f"the UperNet backbone config has a classifier field {key!r}; a backbone has none"
            )
    return SwinConfig.from_dict(data)


@dataclass(frozen=True)
class SegmentationPreset:
    """A row of mmsegmentation's Swin ADE20K table: architecture, pretraining, scores and downloads."""

    name: str
    config: UperNetConfig
    hub_id: str | None  # Hugging Face port (transformers' UperNetForSemanticSegmentation), where one exists
    pretrain: str  # backbone pretraining data: "ImageNet-1K" or "ImageNet-22K"
    pretrain_image_size: int  # backbone pretraining resolution
    crop_size: int = 512  # training crop (and sliding-window crop)
    miou: float | None = None  # ADE20K val mIoU, single scale (mmseg table)
    miou_ms_flip: float | None = None  # ADE20K val mIoU with multi-scale + flip testing
    checkpoint_url: str | None = None  # the mmsegmentation checkpoint
    description: str = ""


_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
_DOWNLOAD = "https://download.openmmlab.com/mmsegmentation/v0.5/swin/"
# (size, pretrain, pretrain size, window, mIoU, ms+flip mIoU, mmseg run name, file stamp, hub id), seed table
_ROWS = [
    ("tiny", "1K", 224, 7, 44.41, 45.79, "512x512_160k_ade20k_pretrain_224x224_1K", "20210531_112542-e380ad3e", True),
    ("small", "1K", 224, 7, 47.72, 49.24, "512x512_160k_ade20k_pretrain_224x224_1K", "20210526_192015-ee2fff1c", True),
    ("base", "1K", 224, 7, 47.99, 49.57, "512x512_160k_ade20k_pretrain_224x224_1K", "20210526_192340-593b0e13", False),
    ("base", "22K", 224, 7, 50.31, 51.9, "512x512_160k_ade20k_pretrain_224x224_22K", "20210526_211650-762e2178", False),
    ("base", "1K", 384, 12, 48.35, 49.65, "512x512_160k_ade20k_pretrain_384x384_1K", "20210531_132020-05b22ea4", False),
    ("base", "22K", 384, 12, 50.76, 52.4, "512x512_160k_ade20k_pretrain_384x384_22K", "20210531_125459-429057bf", True),
    ("large", "22K", 224, 7, 51.17, 52.99, "512x512_pretrain_224x224_22K_160k_ade20k", "20220318_015320-48d180dd", False),
    ("large", "22K", 384, 12, 52.25, 54.12, "512x512_pretrain_384x384_22K_160k_ade20k", "20220318_091743-9ba68901", True),
]  # fmt: skip


def _ade20k_config(backbone: SwinConfig, **head: Any) -> UperNetConfig:
    return UperNetConfig(backbone=backbone, num_classes=len(ADE20K_CLASSES), labels=ADE20K_CLASSES, **head)


def _zoo_preset(row: tuple) -> SegmentationPreset:
    size, data, image, window, miou, ms_flip, run_tail, stamp, on_hub = row
    run = f"upernet_swin_{size}_patch4_window{window}_{run_tail}"
    name = f"upernet_swin_{size}_patch4_window{window}_{image}_{data.lower()}_ade20k_512"
    backbone = SwinConfig(image_size=image, window_size=window, drop_path_rate=0.3, **_SIZES[size])
    return SegmentationPreset(
        name=name,
        config=_ade20k_config(backbone),
        hub_id=f"openmmlab/upernet-swin-{size}" if on_hub else None,
        pretrain=f"ImageNet-{data}",
        pretrain_image_size=image,
        miou=miou,
        miou_ms_flip=ms_flip,
        checkpoint_url=f"{_DOWNLOAD}{run}/{run}_{stamp}.pth",
        description=f"UPerNet Swin-{size[0].upper()} ADE20K 512x512, ImageNet-{data} {image} pretrained",
    )


def _build_presets() -> dict[str, SegmentationPreset]:
    presets = [_zoo_preset(row) for row in _ROWS]
    micro = SwinConfig(
        image_size=64,
        window_size=4,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        drop_path_rate=0.1,
    )
    presets.append(
        SegmentationPreset(
            name="upernet_swin_micro",
            config=_ade20k_config(micro, channels=32, aux_channels=16),
            hub_id=None,
            pretrain="none",
            pretrain_image_size=64,
            crop_size=64,
            description="small CPU UPerNet for tests and demos (ADE20K classes)",
        )
    )
    return {p.name: p for p in presets}


SEGMENTATION_PRESETS: dict[str, SegmentationPreset] = _build_presets()


def get_segmentation_preset(name: str) -> SegmentationPreset:
    """The segmentation preset called ``name``; a ValueError names close matches when it does not exist."""
    return lookup_preset(SEGMENTATION_PRESETS, name, "segmentation preset")


def segmentation_hub_id(name: str) -> str | None:
    """The hub id of segmentation preset ``name``, None when no preset has that name; a ValueError when the
    preset has no Hugging Face port."""
    preset = SEGMENTATION_PRESETS.get(name)
    if preset is None:
        return None
    if preset.hub_id is None:
        raise ValueError(
            f"segmentation preset {name!r} has no Hugging Face port; download its mmseg checkpoint "
            f"({preset.checkpoint_url}) or build it with swinkit.models.segmentation.create_upernet({name!r})"
        )
    return preset.hub_id

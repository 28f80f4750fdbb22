"""UPerNet with a Swin backbone: mmsegmentation's ``EncoderDecoder(SwinTransformer, UPerHead, FCNHead)``.

The backbone is :class:`swinkit.models.swin.SwinBackbone` in the detection convention (every stage keeps its
window, pads, always shifts odd blocks) with an output LayerNorm per stage; the heads are in
:mod:`swinkit.models.segmentation.heads`. Logits come back at the input size (bilinear, mmseg's
``align_corners=False``), in eval and in training alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from swinkit.flops import count_flops
from swinkit.models.segmentation.config import UperNetConfig, get_segmentation_preset
from swinkit.models.segmentation.heads import FCNHead, UPerHead, resize
from swinkit.models.segmentation.losses import check_labels, segmentation_cross_entropy
from swinkit.models.swin import SwinBackbone


@dataclass
class SegmentationOutput:
    """What :class:`UperNet` returns, whatever ``self.training`` is."""

    logits: torch.Tensor  # (B, num_classes, H, W) at the input size
    auxiliary_logits: torch.Tensor | None = None  # (B, num_classes, H, W); None without the auxiliary head


class UperNet(nn.Module):
    """Backbone + UPerHead (+ FCN auxiliary head): (B, 3, H, W) pixels to per-pixel class logits."""

    def __init__(
        self,
        config: UperNetConfig,
        backbone: SwinBackbone,
        decode_head: UPerHead,
        auxiliary_head: FCNHead | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def init_weights(self) -> None:
        """The backbone's official initialisation and mmseg's head initialisation."""
        self.backbone.init_weights()
        self.decode_head.init_weights()
        if self.auxiliary_head is not None:
            self.auxiliary_head.init_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in the backward pass instead of keeping their activations."""
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, pixel_values: torch.Tensor, auxiliary: bool = True) -> SegmentationOutput:
        """Logits at the input size; ``auxiliary=False`` skips the auxiliary head (its logits are None)."""
        features = self.backbone(pixel_values)  # [(B, C_i, H/4/2^i, W/4/2^i)]
        size = pixel_values.shape[2:]
        logits = resize(self.decode_head(features), size, self.config.align_corners)
        aux = None
        if auxiliary and self.auxiliary_head is not None:
            aux = resize(self.auxiliary_head(features), size, self.config.align_corners)
        return SegmentationOutput(logits=logits, auxiliary_logits=aux)

    def losses(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss_ce", "loss_aux"}`` (the latter already weighted by ``aux_weight``) for (B, H, W) labels.

        The cross entropy is reduced as mmseg's (see :mod:`swinkit.models.segmentation.losses`).
        """
        c = self.config
        check_labels(labels, c.num_classes, pixel_values.shape, c.ignore_index)
        if self.training and pixel_values.shape[0] < 2:
            raise ValueError(
                "training needs at least 2 images per batch: BatchNorm after the 1x1 pyramid pooling "
                "branch has a single value per channel for one image"
            )
        return output_losses(c, self.forward(pixel_values), labels)


def output_losses(
    config: UperNetConfig, output: SegmentationOutput, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``UperNet.losses`` of an already computed output (what a trainer calls through a DDP wrapper,
    whose forward is the model's)."""
    losses = {
        "loss_ce": segmentation_cross_entropy(
            output.logits, labels, config.ignore_index, config.avg_non_ignore
        )
    }
    if output.auxiliary_logits is not None:
        aux = segmentation_cross_entropy(
            output.auxiliary_logits, labels, config.ignore_index, config.avg_non_ignore
        )
        losses["loss_aux"] = config.aux_weight * aux
    return losses


def build_upernet(config: UperNetConfig) -> UperNet:
    """A randomly initialised UperNet for ``config``."""
    backbone = SwinBackbone(config.backbone, out_indices=range(config.backbone.num_stages), out_norms=True)
    widths = backbone.out_channels
    decode_head = UPerHead(
        widths, config.channels, config.num_classes, config.pool_scales, config.dropout, config.align_corners
    )
    auxiliary_head = None
    if config.use_auxiliary_head:
        auxiliary_head = FCNHead(
            widths[config.aux_in_index],
            config.aux_channels,
            config.num_classes,
            in_index=config.aux_in_index,
            num_convs=config.aux_num_convs,
            concat_input=config.aux_concat_input,
            dropout=config.dropout,
        )
    model = UperNet(config, backbone, decode_head, auxiliary_head)
    model.init_weights()
    return model


def upernet_flops(config: UperNetConfig, image_size: tuple[int, int] = (512, 2048)) -> int:
    """Multiply-adds of one inference pass (no auxiliary head, as mmseg's ``get_flops.py`` and the Swin paper's
    table count it) at ``image_size`` (H, W); the model is built on the ``meta`` device, nothing is computed."""
    with torch.device("meta"):
        model = build_upernet(config.replace(use_auxiliary_head=False)).eval()
    return count_flops(model, image_size)


def create_upernet(name: str, **overrides: object) -> UperNet:
    """A randomly initialised UperNet of segmentation preset ``name``; ``overrides`` change UperNetConfig fields."""
    return build_upernet(get_segmentation_preset(name).config.replace(**overrides))


# devices torch's SyncBatchNorm runs on; on others (the CPU) its forward raises "SyncBatchNorm expected input
# tensor to be on GPU or XPU or privateuseone" once a process group exists
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


def sync_head_norms(model: UperNet) -> UperNet:
    """``model`` with the heads' BatchNorm as ``nn.SyncBatchNorm`` (batch statistics over every process), as
    mmseg's Swin UPerNet configs (``norm_cfg=dict(type='SyncBN')`` in the decode and auxiliary heads); the
    backbone has LayerNorm only. Converts in place and returns ``model``, like torch's
    ``convert_sync_batchnorm``; the weights, buffers and state-dict keys are unchanged."""
    model.decode_head = nn.SyncBatchNorm.convert_sync_batchnorm(model.decode_head)
    if model.auxiliary_head is not None:
        model.auxiliary_head = nn.SyncBatchNorm.convert_sync_batchnorm(model.auxiliary_head)
    return model

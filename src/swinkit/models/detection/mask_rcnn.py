"""Mask R-CNN / Faster R-CNN with a Swin backbone: mmdetection's ``TwoStageDetector.predict``.

``backbone -> neck (FPN) -> rpn_head (proposals) -> roi_head (boxes, then masks)``, parts passed in; the
builder only wires them. The backbone is :class:`swinkit.models.swin.SwinBackbone` in the detection
convention with an output LayerNorm per stage (mmdet's ``SwinTransformer(out_indices=(0, 1, 2, 3))``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from swinkit.flops import count_flops
from swinkit.models.detection.config import MaskRCNNConfig, get_detection_preset
from swinkit.models.detection.fpn import FPN
from swinkit.models.detection.losses import (
    box_loss,
    box_targets,
    mask_loss,
    rpn_loss,
    sample_rois,
    sampled_rois,
)
from swinkit.models.detection.roi_heads import FCNMaskHead, Shared2FCBBoxHead, StandardRoIHead, boxes_to_rois
from swinkit.models.detection.rpn import RPNHead, proposals_single
from swinkit.models.detection.structures import DetectionOutput, DetectionTargets, ImageMeta
from swinkit.models.detection.train_config import DetectionTrainConfig
from swinkit.models.swin import SwinBackbone


class MaskRCNN(nn.Module):
    """A two-stage detector: a padded (B, 3, H, W) batch and its metas to per-image detections."""

    def __init__(
        self,
        config: MaskRCNNConfig,
        backbone: SwinBackbone,
        neck: FPN,
        rpn_head: RPNHead,
        roi_head: StandardRoIHead,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def with_mask(self) -> bool:
        return self.roi_head.mask_head is not None

    def init_weights(self) -> None:
        """The backbone's official initialisation and mmdet's neck and head initialisation."""
        self.backbone.init_weights()
        self.neck.init_weights()
        self.rpn_head.init_weights()
        self.roi_head.init_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in the backward pass instead of keeping their activations."""
        self.backbone.set_grad_checkpointing(enable)

    def extract_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """mmdet's ``extract_feat``: the FPN levels [(B, C, H/4, W/4), ..., (B, C, H/64, W/64)]."""
        return self.neck(self.backbone(pixel_values))

    def forward(
        self,
        pixel_values: torch.Tensor,
        image_metas: Sequence[ImageMeta],
        targets: DetectionTargets | None = None,
        generator: torch.Generator | None = None,
    ) -> DetectionOutput:
        """Detections per image in its original pixels (boxes, scores, labels, masks for Mask R-CNN).

        ``pixel_values`` is the normalised batch padded at the bottom and right (see
        :class:`swinkit.models.detection.preprocess.DetectionPreprocessor`); ``image_metas`` has one entry
        per image telling its resized and original sizes. With ``targets`` the output holds :meth:`losses`
        instead (no detections; the way a DistributedDataParallel wrapper trains the detector).
        """
        if targets is not None:
            losses = self.losses(pixel_values, image_metas, targets.boxes, targets.labels, targets.masks,
                                 generator=generator)  # fmt: skip
            return DetectionOutput(detections=[], proposals=[], losses=losses)
        check_batch(pixel_values, image_metas)
        return self.predict_dense(split_dense(self.dense(pixel_values)), image_metas)

    def dense(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The detector's dense half, what an exported graph computes: backbone, FPN and the RPN head's convs.

        A flat tuple: the ``num_outs`` FPN levels (B, C, H/4, W/4) ... (B, C, H/64, W/64), then per level the
        RPN objectness logits (B, A, h, w), then per level its deltas (B, 4A, h, w) (``split_dense``).
        """
        return dense_forward(self.backbone, self.neck, self.rpn_head, pixel_values)

    def predict_dense(self, dense: DenseOutputs, image_metas: Sequence[ImageMeta]) -> DetectionOutput:
        """The sparse half on the dense outputs (whatever runtime computed them): proposals (NMS), RoIAlign,
        the box and mask heads and their post-processing, as mmdet's ``TwoStageDetector.predict``."""
        check_dense(dense, self.config.num_outs, len(image_metas))
        anchors = self.rpn_head.anchors(dense.features)
        proposals = self.rpn_head.predict_by_feat(dense.scores, dense.deltas, anchors, image_metas)
        detections = self.roi_head.predict(dense.features, proposals, image_metas)
        return DetectionOutput(detections=detections, proposals=proposals)

    def losses(
        self,
        pixel_values: torch.Tensor,
        image_metas: Sequence[ImageMeta],
        gt_boxes: Sequence[torch.Tensor],
        gt_labels: Sequence[torch.Tensor],
        gt_masks: Sequence[torch.Tensor] | None = None,
        train_config: DetectionTrainConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """mmdet's ``TwoStageDetector.loss``: ``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox``,
        ``loss_mask`` (Mask R-CNN) and ``acc`` (the box classifier's accuracy in percent: not a loss).

        Per image ``gt_boxes`` (G, 4) in input pixels (after the resize), ``gt_labels`` (G,) in
        ``[0, num_classes)`` and ``gt_masks`` (G, H, W) at least ``img_shape`` large. ``generator`` makes the
        anchor and RoI sampling reproducible.
        """
        check_batch(pixel_values, image_metas)
        check_targets(self, len(image_metas), gt_boxes, gt_labels, gt_masks)
        cfg = train_config or DetectionTrainConfig()
        c = self.config
        features = self.extract_features(pixel_values)
        scores, deltas = self.rpn_head(features)
        anchors = self.rpn_head.anchors(features)
        out = rpn_loss(
            scores,
            deltas,
            anchors,
            image_metas,
            gt_boxes,
            cfg,
            c.anchor_strides,
            c.pad_size_divisor,
            generator,
        )
        proposal_config = dataclasses.replace(
            c, rpn_nms_pre=cfg.proposal_nms_pre, rpn_iou_threshold=cfg.proposal_iou_threshold,
            rpn_max_per_img=cfg.proposal_max_per_img,
        )  # fmt: skip
        with torch.no_grad():
            proposals = [
                proposals_single(
                    [s[i] for s in scores], [d[i] for d in deltas], anchors, m.img_shape, proposal_config
                )
                for i, m in enumerate(image_metas)
            ]
        out.update(self.roi_losses(features, proposals, gt_boxes, gt_labels, gt_masks, cfg, generator))
        return out

    def roi_losses(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        gt_boxes: Sequence[torch.Tensor],
        gt_labels: Sequence[torch.Tensor],
        gt_masks: Sequence[torch.Tensor] | None,
        cfg: DetectionTrainConfig,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """mmdet's ``StandardRoIHead.loss``: sampled RoIs through the box head, positives through the mask head."""
        c, head = self.config, self.roi_head
        samples = sample_rois(proposals, gt_boxes, gt_labels, cfg, generator)
        rois = boxes_to_rois(sampled_rois(samples))
        cls_scores, pred_deltas = head.bbox_head(head.roi_features(features, rois, c.bbox_roi_size))
        labels, target_deltas = box_targets(samples, c.num_classes, c.bbox_target_means, c.bbox_target_stds)
        out = box_loss(cls_scores, pred_deltas, labels, target_deltas, c.num_classes)
        if head.mask_head is not None:
            # run even on no positive RoI (mmdet's ``_mask_forward`` does): the empty logits' sum still reaches
            # every mask head parameter, so DDP gets a (zero) gradient for each of them on every rank
            pos_rois = boxes_to_rois([s.pos_priors for s in samples])
            logits = head.mask_head(head.roi_features(features, pos_rois, c.mask_roi_size))
            out["loss_mask"] = mask_loss(logits, samples, gt_masks, cfg.mask_size)
        return out


@dataclass(frozen=True)
class DenseOutputs:
    """The dense half's outputs (``MaskRCNN.dense``) by role: per level FPN maps, RPN logits and deltas."""

    features: list[torch.Tensor]  # num_outs x (B, C, h, w)
    scores: list[torch.Tensor]  # num_outs x (B, A, h, w)
    deltas: list[torch.Tensor]  # num_outs x (B, 4A, h, w)


def dense_output_names(num_outs: int) -> tuple[str, ...]:
    """The names of ``MaskRCNN.dense``'s outputs, in order (an exported graph's output names)."""
    levels = range(num_outs)
    return (
        *(f"fpn_{i}" for i in levels),
        *(f"rpn_cls_{i}" for i in levels),
        *(f"rpn_reg_{i}" for i in levels),
    )


def split_dense(outputs: Sequence[torch.Tensor]) -> DenseOutputs:
    """``MaskRCNN.dense``'s flat tuple (3 x num_outs tensors) by role."""
    if len(outputs) % 3:
        raise ValueError(f"the dense outputs are 3 tensors per FPN level, got {len(outputs)} tensors")
    n = len(outputs) // 3
    return DenseOutputs(list(outputs[:n]), list(outputs[n : 2 * n]), list(outputs[2 * n :]))


def check_dense(dense: DenseOutputs, num_outs: int, num_images: int) -> None:
    """A ValueError unless ``dense`` has ``num_outs`` levels of each output for a batch of ``num_images``."""
    if len(dense.features) != num_outs:
        raise ValueError(f"the detector has {num_outs} FPN levels, the dense outputs {len(dense.features)}")
    batches = {t.shape[0] for t in (*dense.features, *dense.scores, *dense.deltas)}
    if batches != {num_images}:
        raise ValueError(f"dense outputs of batch sizes {sorted(batches)} given for {num_images} images")


class DenseGraph(nn.Module):
    """The dense half as a module of its own (``MaskRCNN.dense``): pixels (B, 3, H, W) to a flat tuple.

    Holds the backbone, neck and RPN head only (not the RoI heads), so what is traced, or copied to bf16, is
    exactly the part an exported graph computes.
    """

    def __init__(self, model: MaskRCNN) -> None:
        super().__init__()
        self.backbone, self.neck, self.rpn_head = model.backbone, model.neck, model.rpn_head

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return dense_forward(self.backbone, self.neck, self.rpn_head, pixel_values)


def dense_forward(
    backbone: SwinBackbone, neck: FPN, rpn_head: RPNHead, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Backbone, FPN and RPN head convs on (B, 3, H, W) pixels: FPN maps, then RPN logits, then deltas."""
    features = neck(backbone(pixel_values))
    scores, deltas = rpn_head(features)
    return (*features, *scores, *deltas)


def check_targets(
    model: MaskRCNN,
    num_images: int,
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    gt_masks: Sequence[torch.Tensor] | None,
) -> None:
    """A ValueError unless there are one (G, 4) box, (G,) label and, for Mask R-CNN, (G, H, W) mask set per image."""
    if len(gt_boxes) != num_images or len(gt_labels) != num_images:
        raise ValueError(f"{len(gt_boxes)} box and {len(gt_labels)} label sets given for {num_images} images")
    if model.with_mask and (gt_masks is None or len(gt_masks) != num_images):
        raise ValueError("Mask R-CNN's losses need one (G, H, W) ground-truth mask tensor per image")
    for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"image {i} has ground-truth boxes {tuple(boxes.shape)} and labels {tuple(labels.shape)}; "
                "expected (G, 4) and (G,)"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= model.num_classes):
            raise ValueError(f"image {i} has a label outside [0, {model.num_classes})")
        if model.with_mask and (gt_masks[i].ndim != 3 or gt_masks[i].shape[0] != boxes.shape[0]):
            raise ValueError(f"image {i} has {tuple(gt_masks[i].shape)} masks for {boxes.shape[0]} boxes")


def check_batch(pixel_values: torch.Tensor, image_metas: Sequence[ImageMeta]) -> None:
    """A ValueError unless the batch is (B, C, H, W) with one meta per image that fits inside it."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be a (B, C, H, W) batch, got shape {tuple(pixel_values.shape)}")
    if len(image_metas) != pixel_values.shape[0]:
        raise ValueError(
            f"{len(image_metas)} image metas given for a batch of {pixel_values.shape[0]} images"
        )
    height, width = pixel_values.shape[2:]
    for i, meta in enumerate(image_metas):
        if meta.img_shape[0] > height or meta.img_shape[1] > width:
            raise ValueError(
                f"image {i} has img_shape {meta.img_shape}, larger than the {height}x{width} batch"
            )


def build_mask_rcnn(config: MaskRCNNConfig) -> MaskRCNN:
    """A randomly initialised detector for ``config`` (Faster R-CNN when ``config.with_mask`` is False)."""
    stages = config.backbone.num_stages
    backbone = SwinBackbone(config.backbone, out_indices=range(stages), always_shift=True, out_norms=True)
    neck = FPN(backbone.out_channels, config.fpn_channels, config.num_outs)
    mask_head = FCNMaskHead(config) if config.with_mask else None
    roi_head = StandardRoIHead(config, Shared2FCBBoxHead(config), mask_head)
    model = MaskRCNN(config, backbone, neck, RPNHead(config), roi_head)
    model.init_weights()
    return model


def create_mask_rcnn(name: str, **overrides: object) -> MaskRCNN:
    """A randomly initialised detector of detection preset ``name``; ``overrides`` change MaskRCNNConfig fields."""
    return build_mask_rcnn(get_detection_preset(name).config.replace(**overrides))


class _FixedRoIPass(nn.Module):
    """The detector's arithmetic with a fixed number of RoIs: backbone, FPN, RPN head, box head on
    ``num_proposals`` RoIs and mask head on ``num_detections`` (for counting; no NMS, nothing data-dependent)."""

    def __init__(self, model: MaskRCNN, num_proposals: int, num_detections: int) -> None:
        super().__init__()
        self.model = model
        self.num_proposals = num_proposals
        self.num_detections = num_detections

    def forward(self, pixel_values: torch.Tensor) -> None:
        c = self.model.config
        self.model.rpn_head(self.model.extract_features(pixel_values))
        box_rois = pixel_values.new_zeros(
            self.num_proposals, c.fpn_channels, c.bbox_roi_size, c.bbox_roi_size
        )
        self.model.roi_head.bbox_head(box_rois)
        if self.model.roi_head.mask_head is not None:
            mask_rois = pixel_values.new_zeros(
                self.num_detections, c.fpn_channels, c.mask_roi_size, c.mask_roi_size
            )
            self.model.roi_head.mask_head(mask_rois)


def mask_rcnn_flops(
    config: MaskRCNNConfig,
    image_size: tuple[int, int] = (800, 1333),
    num_proposals: int = 1000,
    num_detections: int = 100,
) -> int:
    """Multiply-adds of one image at ``image_size`` (H, W) with ``num_proposals`` RoIs through the box head and
    ``num_detections`` through the mask head (RoIAlign, NMS and pasting are not counted); the model is built
    on the ``meta`` device, nothing is computed."""
    with torch.device("meta"):
        model = build_mask_rcnn(config).eval()
    return count_flops(_FixedRoIPass(model, num_proposals, num_detections), image_size)

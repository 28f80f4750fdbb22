"""mmdetection's ``StandardRoIHead`` with ``Shared2FCBBoxHead`` and ``FCNMaskHead``, test time.

Followed (mmdet 3.3): ``roi_heads/standard_roi_head.py`` (``predict_bbox``, ``predict_mask``: every image's
RoIs go through the extractor and the heads together), ``roi_extractors/single_level_roi_extractor.py``
(level by ``floor(log2(sqrt(area) / finest_scale + 1e-6))``), ``bbox_heads/convfc_bbox_head.py`` and
``bbox_head.py`` (``_predict_by_feat_single``: softmax, class-specific decoding clipped to ``img_shape``,
rescale by ``1 / scale_factor``, ``multiclass_nms``), ``mask_heads/fcn_mask_head.py`` (``_predict_by_feat_single``:
sigmoid, the label's 28x28 map, boxes divided by ``scale_factor``, pasted to ``ori_shape``, thresholded) and
``utils/misc.py::empty_instances``. Module names are mmdet's (``bbox_head.shared_fcs.{i}``, ``fc_cls``,
``fc_reg``, ``mask_head.convs.{i}.conv``, ``upsample``, ``conv_logits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.models.detection.config import MaskRCNNConfig
from swinkit.models.detection.fpn import ConvLayer, xavier_uniform_init
from swinkit.models.detection.structures import Detections, ImageMeta
from swinkit.ops.boxes import decode_deltas
from swinkit.ops.masks import paste_masks
from swinkit.ops.nms import multiclass_nms
from swinkit.ops.roi_align import multi_level_roi_align


class Shared2FCBBoxHead(nn.Module):
    """(K, C, 7, 7) RoI features to class logits (K, num_classes + 1) and class-specific deltas (K, 4 * num_classes)."""

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        width = config.fpn_channels * config.bbox_roi_size**2
        fcs = []
        for _ in range(config.num_shared_fcs):
            fcs.append(nn.Linear(width, config.fc_channels))
            width = config.fc_channels
        self.shared_fcs = nn.ModuleList(fcs)
        self.fc_cls = nn.Linear(width, config.num_classes + 1)
        self.fc_reg = nn.Linear(width, 4 * config.num_classes)

    def init_weights(self) -> None:
        """mmdet's init_cfg: shared fcs Xavier uniform, ``fc_cls`` normal(0, 0.01), ``fc_reg`` normal(0, 0.001)."""
        for fc in self.shared_fcs:
            xavier_uniform_init(fc)
        for fc, std in ((self.fc_cls, 0.01), (self.fc_reg, 0.001)):
            nn.init.normal_(fc.weight, std=std)
            nn.init.zeros_(fc.bias)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = roi_features.flatten(1)  # (K, C*7*7)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FCNMaskHead(nn.Module):
    """(K, C, 14, 14) RoI features to per-class mask logits (K, num_classes, 28, 28)."""

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        width = config.mask_channels
        self.convs = nn.ModuleList(
            ConvLayer(config.fpn_channels if i == 0 else width, width, 3, padding=1, relu=True)
            for i in range(config.mask_num_convs)
        )
        self.upsample = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.conv_logits = nn.Conv2d(width, config.num_classes, 1)

    def init_weights(self) -> None:
        """mmcv ConvModule's Kaiming normal for the convs; mmdet's ``FCNMaskHead.init_weights`` for the rest."""
        for module in (*(c.conv for c in self.convs), self.upsample, self.conv_logits):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        x = roi_features
        for conv in self.convs:
            x = conv(x)
        x = F.relu(self.upsample(x))  # (K, C, 28, 28)
        return self.conv_logits(x)


def boxes_to_rois(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """mmdet's ``bbox2roi``: per-image (N_i, >=4) boxes to (sum N_i, 5) rois (image index, x1, y1, x2, y2)."""
    rois = [torch.cat([b.new_full((b.shape[0], 1), i), b[:, :4]], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rois)


def empty_detections(reference: torch.Tensor, meta: ImageMeta, with_mask: bool) -> Detections:
    """mmdet's ``empty_instances``: zero boxes (0, 4), scores, int64 labels and (0, H0, W0) bool masks."""
    masks = (
        torch.zeros((0, *meta.ori_shape), dtype=torch.bool, device=reference.device) if with_mask else None
    )
    return Detections(
        boxes=reference.new_zeros((0, 4)),
        scores=reference.new_zeros((0,)),
        labels=torch.zeros((0,), dtype=torch.long, device=reference.device),
        masks=masks,
    )


class StandardRoIHead(nn.Module):
    """Box head (and mask head) on RoIAligned FPN features: proposals to detections in original pixels."""

    def __init__(
        self, config: MaskRCNNConfig, bbox_head: Shared2FCBBoxHead, mask_head: FCNMaskHead | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.bbox_head = bbox_head
        self.mask_head = mask_head

    def init_weights(self) -> None:
        self.bbox_head.init_weights()
        if self.mask_head is not None:
            self.mask_head.init_weights()

    def roi_features(self, features: Sequence[torch.Tensor], rois: torch.Tensor, size: int) -> torch.Tensor:
        """mmdet's ``SingleRoIExtractor``: (K, C, size, size) RoIAlign features, one level per RoI."""
        c = self.config
        levels = list(features[: len(c.roi_strides)])
        return multi_level_roi_align(
            levels,
            rois,
            (size, size),
            list(c.roi_strides),
            finest_scale=c.roi_finest_scale,
            sampling_ratio=0,
            aligned=True,
        )

    def predict(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_metas: Sequence[ImageMeta],
    ) -> list[Detections]:
        """mmdet's ``StandardRoIHead.predict(rescale=True)``: per image detections in original pixels."""
        with_mask = self.mask_head is not None
        detections = self.predict_boxes(features, proposals, image_metas, rescale=not with_mask)
        if with_mask:
            detections = self.predict_masks(features, detections, image_metas)
        return detections

    def predict_boxes(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_metas: Sequence[ImageMeta],
        rescale: bool,
    ) -> list[Detections]:
        """Detections in input pixels, or original pixels when ``rescale`` (masks not yet predicted)."""
        cls_scores, deltas = self.box_logits(features, proposals)
        return self.boxes_by_feat(proposals, cls_scores, deltas, image_metas, rescale)

    def box_logits(
        self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The box head on every image's proposals: (K, num_classes + 1) logits, (K, 4 * num_classes) deltas."""
        rois = boxes_to_rois(proposals)
        c = self.config
        if rois.shape[0] == 0:
            return rois.new_zeros((0, c.num_classes + 1)), rois.new_zeros((0, 4 * c.num_classes))
        return self.bbox_head(self.roi_features(features, rois, c.bbox_roi_size))

    def boxes_by_feat(
        self,
        proposals: Sequence[torch.Tensor],
        cls_scores: torch.Tensor,
        deltas: torch.Tensor,
        image_metas: Sequence[ImageMeta],
        rescale: bool,
    ) -> list[Detections]:
        """mmdet's ``BBoxHead.predict_by_feat``: the box head's outputs split per image and post-processed."""
        counts = [p.shape[0] for p in proposals]
        return [
            self._detections_single(p[:, :4], s, d, meta, rescale)
            for p, s, d, meta in zip(proposals, cls_scores.split(counts), deltas.split(counts), image_metas)
        ]

    def _detections_single(
        self,
        rois: torch.Tensor,
        cls_score: torch.Tensor,
        deltas: torch.Tensor,
        meta: ImageMeta,
        rescale: bool,
    ) -> Detections:
        """mmdet's ``BBoxHead._predict_by_feat_single`` for (K, 4) rois, (K, C+1) logits, (K, 4C) deltas."""
        c = self.config
        if rois.shape[0] == 0:
            return empty_detections(rois, meta, with_mask=False)
        scores = F.softmax(cls_score, dim=-1)  # (K, C+1), background last
        repeated = rois.repeat_interleave(c.num_classes, dim=0)  # (K*C, 4)
        boxes = decode_deltas(
            repeated, deltas.view(-1, 4), c.bbox_target_means, c.bbox_target_stds, max_shape=meta.img_shape
        )
        if rescale:
            w_scale, h_scale = meta.scale_factor
            boxes = boxes * boxes.new_tensor([1 / w_scale, 1 / h_scale]).repeat(2)  # mmdet's scale_boxes
        boxes = boxes.view(rois.shape[0], -1)  # (K, 4C)
        dets, labels, _ = multiclass_nms(boxes, scores, c.score_threshold, c.iou_threshold, c.max_per_img)
        return Detections(boxes=dets[:, :4], scores=dets[:, 4], labels=labels)

    def predict_masks(
        self,
        features: Sequence[torch.Tensor],
        detections: Sequence[Detections],
        image_metas: Sequence[ImageMeta],
    ) -> list[Detections]:
        """Masks for detections in input pixels; returns them with boxes and masks in original pixels."""
        return self.masks_by_feat(detections, self.mask_logits(features, detections), image_metas)

    def mask_logits(self, features: Sequence[torch.Tensor], detections: Sequence[Detections]) -> torch.Tensor:
        """The mask head on every image's detections: (N, num_classes, 28, 28) logits."""
        rois = boxes_to_rois([d.boxes for d in detections])
        if rois.shape[0] == 0:
            side = 2 * self.config.mask_roi_size
            return rois.new_zeros((0, self.config.num_classes, side, side))
        return self.mask_head(self.roi_features(features, rois, self.config.mask_roi_size))

    def masks_by_feat(
        self, detections: Sequence[Detections], logits: torch.Tensor, image_metas: Sequence[ImageMeta]
    ) -> list[Detections]:
        """mmdet's ``FCNMaskHead.predict_by_feat(rescale=True)``: per image masks pasted at the original size."""
        per_image = logits.split([len(d) for d in detections])
        return [
            self._masks_single(d, m, meta) if len(d) else empty_detections(m, meta, with_mask=True)
            for d, m, meta in zip(detections, per_image, image_metas)
        ]

    def _masks_single(self, detections: Detections, logits: torch.Tensor, meta: ImageMeta) -> Detections:
        """mmdet's ``FCNMaskHead._predict_by_feat_single(rescale=True)`` for (N, num_classes, 28, 28) logits."""
        n = len(detections)
        probs = logits.sigmoid()[torch.arange(n, device=logits.device), detections.labels]  # (N, 28, 28)
        scale = detections.boxes.new_tensor(meta.scale_factor).repeat(2)  # (w, h, w, h)
        boxes = detections.boxes / scale
        masks = paste_masks(probs, boxes, meta.ori_shape, threshold=self.config.mask_threshold)
        return Detections(boxes=boxes, scores=detections.scores, labels=detections.labels, masks=masks)

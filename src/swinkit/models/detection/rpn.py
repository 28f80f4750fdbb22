"""mmdetection's RPN head (``mmdet/models/dense_heads/rpn_head.py``) and its test-time proposals.

The head is one 3x3 convolution + ReLU shared by the levels, then 1x1 ``rpn_cls`` (one sigmoid logit per
anchor) and ``rpn_reg`` (4 deltas per anchor). :func:`proposals_single` mirrors
``RPNHead._predict_by_feat_single`` and ``_bbox_post_process``: per level the sigmoid scores are sorted and
the best ``nms_pre`` kept, all levels are decoded together (``DeltaXYWHBBoxCoder``, means 0, stds 1, clipped
to the image), boxes not wider and taller than ``min_bbox_size`` are dropped, NMS runs separately per level
(``batched_nms`` with the level ids) and the first ``max_per_img`` survive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.models.detection.config import MaskRCNNConfig
from swinkit.models.detection.structures import ImageMeta
from swinkit.ops.anchors import multi_level_anchors
from swinkit.ops.boxes import decode_deltas
from swinkit.ops.nms import batched_nms

_RPN_MEANS = (0.0, 0.0, 0.0, 0.0)
_RPN_STDS = (1.0, 1.0, 1.0, 1.0)
_ANCHOR_CACHE_SIZE = 8  # (feature sizes, device, dtype) entries of anchors kept per head


class RPNHead(nn.Module):
    """Per FPN level (B, C, H, W) to objectness logits (B, A, H, W) and deltas (B, 4A, H, W)."""

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        self.config = config
        channels, anchors = config.fpn_channels, config.num_anchors
        self.rpn_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(channels, anchors, 1)
        self.rpn_reg = nn.Conv2d(channels, anchors * 4, 1)
        self._anchor_cache: dict[tuple, list[torch.Tensor]] = {}

    def init_weights(self) -> None:
        """mmdet's RPNHead ``init_cfg``: normal(0, 0.01) weights, zero biases."""
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        scores, deltas = [], []
        for x in features:
            x = F.relu(self.rpn_conv(x))
            scores.append(self.rpn_cls(x))
            deltas.append(self.rpn_reg(x))
        return scores, deltas

    def anchors(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per level (H*W*A, 4) anchors, location-major then anchor (mmdet's ``AnchorGenerator`` order).

        Kept for the last few (sizes, device, dtype) seen, so a run at one input size computes them once.
        """
        c = self.config
        sizes = tuple(tuple(x.shape[2:]) for x in features)
        key = (sizes, features[0].device, features[0].dtype)
        if key not in self._anchor_cache:
            with torch.inference_mode(False):  # a cache filled while serving stays usable in training
                anchors = multi_level_anchors(sizes, c.anchor_strides, c.anchor_scales, c.anchor_ratios)
                anchors = [a.to(device=key[1], dtype=key[2]) for a in anchors]
            if len(self._anchor_cache) >= _ANCHOR_CACHE_SIZE:
                self._anchor_cache.pop(next(iter(self._anchor_cache)))
            self._anchor_cache[key] = anchors
        return self._anchor_cache[key]

    def predict(
        self, features: Sequence[torch.Tensor], image_metas: Sequence[ImageMeta]
    ) -> list[torch.Tensor]:
        """Per image (P, 5) proposals (x1, y1, x2, y2, score) in input pixels, at most ``rpn_max_per_img``."""
        scores, deltas = self(features)
        return self.predict_by_feat(scores, deltas, self.anchors(features), image_metas)

    def predict_by_feat(
        self,
        scores: Sequence[torch.Tensor],
        deltas: Sequence[torch.Tensor],
        anchors: Sequence[torch.Tensor],
        image_metas: Sequence[ImageMeta],
    ) -> list[torch.Tensor]:
        """The proposals of each image from the head's raw outputs (see :func:`proposals_single`)."""
        return [
            proposals_single(
                [s[i] for s in scores], [d[i] for d in deltas], anchors, meta.img_shape, self.config
            )
            for i, meta in enumerate(image_metas)
        ]


def _top_per_level(
    scores: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    nms_pre: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened sigmoid scores, deltas, anchors and level ids, the best ``nms_pre`` of each level."""
    kept_scores, kept_deltas, kept_anchors, level_ids = [], [], [], []
    for level, (logits, delta, prior) in enumerate(zip(scores, deltas, anchors)):
        prob = logits.permute(1, 2, 0).reshape(-1).sigmoid()  # (H*W*A,)
        delta = delta.permute(1, 2, 0).reshape(-1, 4)  # (H*W*A, 4)
        if 0 < nms_pre < prob.shape[0]:
            prob, order = prob.sort(descending=True)  # mmdet sorts (not topk)
            prob, order = prob[:nms_pre], order[:nms_pre]
            delta, prior = delta[order], prior[order]
        kept_scores.append(prob)
        kept_deltas.append(delta)
        kept_anchors.append(prior)
        level_ids.append(torch.full_like(prob, level, dtype=torch.long))
    return torch.cat(kept_scores), torch.cat(kept_deltas), torch.cat(kept_anchors), torch.cat(level_ids)


def proposals_single(
    scores: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    img_shape: tuple[int, int],
    config: MaskRCNNConfig,
) -> torch.Tensor:
    """One image's (P, 5) proposals from per-level logits (A, H, W), deltas (4A, H, W) and anchors (H*W*A, 4).

    Mirrors mmdet 3.3 ``RPNHead._predict_by_feat_single`` + ``_bbox_post_process`` (test cfg of the config).
    """
    prob, delta, prior, level_ids = _top_per_level(scores, deltas, anchors, config.rpn_nms_pre)
    boxes = decode_deltas(prior, delta, _RPN_MEANS, _RPN_STDS, max_shape=img_shape)  # (K, 4)
    if config.rpn_min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        valid = (w > config.rpn_min_bbox_size) & (h > config.rpn_min_bbox_size)
        if not bool(valid.all()):
            boxes, prob, level_ids = boxes[valid], prob[valid], level_ids[valid]
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 5))
    dets, _ = batched_nms(boxes, prob, level_ids, config.rpn_iou_threshold)  # (M, 5), score-descending
    return dets[: config.rpn_max_per_img]

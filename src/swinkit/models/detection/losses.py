"""Mask R-CNN training targets and losses, as mmdetection 3.3.

Followed: ``dense_heads/anchor_head.py`` (``_get_targets_single``, ``get_targets``, ``loss_by_feat``) with
``rpn_head.py``; ``roi_heads/standard_roi_head.py::loss`` (``bbox_loss``, ``mask_loss``);
``bbox_heads/bbox_head.py`` (``_get_targets_single``, ``loss``); ``mask_heads/fcn_mask_head.py::loss_and_target``
and ``losses/cross_entropy_loss.py`` / ``utils.py::weight_reduce_loss`` (a sum divided by ``avg_factor + eps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from swinkit.models.detection.structures import ImageMeta
from swinkit.models.detection.train_config import DetectionTrainConfig
from swinkit.ops.anchors import multi_level_valid_flags
from swinkit.ops.assign import max_iou_assign
from swinkit.ops.boxes import encode_deltas
from swinkit.ops.mask_targets import mask_targets
from swinkit.ops.sample import SamplingResult, random_sample

_EPS = torch.finfo(torch.float32).eps  # weight_reduce_loss's guard
_RPN_STDS = (1.0, 1.0, 1.0, 1.0)
_ZERO_MEANS = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RPNTargets:
    """One image's RPN targets over all its anchors (N = sum over levels of H*W*A)."""

    objectness: Tensor  # (N,) 1 for sampled positives, 0 otherwise
    weights: Tensor  # (N,) 1 for sampled anchors (positive or negative), 0 otherwise
    deltas: Tensor  # (N, 4) regression targets of the positives (stds 1), 0 elsewhere
    delta_weights: Tensor  # (N, 4) 1 for the positives
    num_sampled: int  # positives + negatives: this image's share of the average factor


def pad_shape(meta: ImageMeta, divisor: int) -> tuple[int, int]:
    """The image's own padded size (mmdet's ``DetDataPreprocessor`` ``pad_shape``): ``img_shape`` rounded up."""
    h, w = meta.img_shape
    return (-(-h // divisor) * divisor, -(-w // divisor) * divisor)


def rpn_targets_single(
    anchors: Tensor,
    valid: Tensor,
    gt_boxes: Tensor,
    cfg: DetectionTrainConfig,
    generator: torch.Generator | None = None,
) -> RPNTargets:
    """mmdet's ``AnchorHead._get_targets_single`` (``allowed_border=-1``: inside = valid) for (N, 4) anchors.

    The valid anchors are assigned by MaxIoU (``rpn_*`` thresholds, low-quality matches) and sampled
    (``rpn_num`` at ``rpn_pos_fraction``, no ground truths added); the rest get weight 0.
    """
    n = anchors.shape[0]
    inside = valid.nonzero().view(-1)
    priors = anchors[inside]
    labels = torch.zeros(gt_boxes.shape[0], dtype=torch.long, device=anchors.device)
    assigned = max_iou_assign(
        priors,
        gt_boxes,
        cfg.rpn_pos_iou_thr,
        cfg.rpn_neg_iou_thr,
        cfg.rpn_min_pos_iou,
        True,
        gt_labels=labels,
    )
    sample = random_sample(
        assigned, cfg.rpn_num, cfg.rpn_pos_fraction, -1, False, generator,
        priors=priors, gt_boxes=gt_boxes, gt_labels=labels,
    )  # fmt: skip
    pos, neg = inside[sample.pos_inds], inside[sample.neg_inds]
    objectness, weights = anchors.new_zeros(n), anchors.new_zeros(n)
    deltas, delta_weights = anchors.new_zeros((n, 4)), anchors.new_zeros((n, 4))
    objectness[pos] = 1.0
    weights[pos], weights[neg] = 1.0, 1.0
    if pos.numel():
        deltas[pos] = encode_deltas(sample.pos_priors, sample.pos_gt_boxes, _ZERO_MEANS, _RPN_STDS)
        delta_weights[pos] = 1.0
    return RPNTargets(objectness, weights, deltas, delta_weights, int(pos.numel() + neg.numel()))


def flatten_levels(scores: Sequence[Tensor], deltas: Sequence[Tensor], i: int) -> tuple[Tensor, Tensor]:
    """Image ``i``'s logits (N,) and deltas (N, 4) over all levels, in the anchors' order."""
    flat_scores = [s[i].permute(1, 2, 0).reshape(-1) for s in scores]  # (H*W*A,) per level
    flat_deltas = [d[i].permute(1, 2, 0).reshape(-1, 4) for d in deltas]  # (H*W*A, 4) per level
    return torch.cat(flat_scores), torch.cat(flat_deltas)


def rpn_loss(
    scores: Sequence[Tensor],
    deltas: Sequence[Tensor],
    anchors: Sequence[Tensor],
    image_metas: Sequence[ImageMeta],
    gt_boxes: Sequence[Tensor],
    cfg: DetectionTrainConfig,
    strides: Sequence[int],
    pad_size_divisor: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """``loss_rpn_cls`` (sigmoid BCE) and ``loss_rpn_bbox`` (L1), both summed over the batch's sampled anchors
    and divided by their count, as ``AnchorHead.loss_by_feat`` with mmdet's RPN ``train_cfg``.

    ``scores`` per level (B, A, H, W), ``deltas`` (B, 4A, H, W), ``anchors`` (H*W*A, 4), ``gt_boxes`` per image
    (G, 4) in input pixels; ``strides`` per level; anchors outside an image's own padded size are not used.
    """
    sizes = [tuple(s.shape[2:]) for s in scores]
    num_anchors = scores[0].shape[1]
    all_anchors = torch.cat(list(anchors))
    cls_sum, box_sum, count = all_anchors.new_zeros(()), all_anchors.new_zeros(()), 0
    for i, meta in enumerate(image_metas):
        valid = multi_level_valid_flags(sizes, pad_shape(meta, pad_size_divisor), strides, num_anchors)
        targets = rpn_targets_single(
            all_anchors, torch.cat(valid).to(all_anchors.device), gt_boxes[i], cfg, generator
        )
        logits, pred = flatten_levels(scores, deltas, i)
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets.objectness, reduction="none")
        cls_sum = cls_sum + (bce * targets.weights).sum()
        box_sum = box_sum + ((pred.float() - targets.deltas).abs() * targets.delta_weights).sum()
        count += targets.num_sampled
    return {"loss_rpn_cls": cls_sum / (count + _EPS), "loss_rpn_bbox": box_sum / (count + _EPS)}


def sample_rois(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    cfg: DetectionTrainConfig,
    generator: torch.Generator | None = None,
) -> list[SamplingResult]:
    """The RoI head's per-image MaxIoU assignment and random sampling (``StandardRoIHead.loss``'s first loop):
    proposals (P, >=4) to ``rcnn_num`` RoIs at ``rcnn_pos_fraction`` with the ground truths added."""
    results = []
    for boxes, gts, labels in zip(proposals, gt_boxes, gt_labels):
        priors = boxes[:, :4].detach()
        assigned = max_iou_assign(
            priors, gts, cfg.rcnn_pos_iou_thr, cfg.rcnn_neg_iou_thr, cfg.rcnn_min_pos_iou,
            cfg.rcnn_match_low_quality, gt_labels=labels,
        )  # fmt: skip
        results.append(
            random_sample(
                assigned,
                cfg.rcnn_num,
                cfg.rcnn_pos_fraction,
                -1,
                True,
                generator,
                priors=priors,
                gt_boxes=gts,
                gt_labels=labels,
            )  # fmt: skip
        )
    return results


def sampled_rois(samples: Sequence[SamplingResult]) -> list[Tensor]:
    """Per image its sampled RoIs (positives first, then negatives), as ``SamplingResult.priors``."""
    return [torch.cat([s.pos_priors, s.neg_priors]) for s in samples]


def box_targets(
    samples: Sequence[SamplingResult],
    num_classes: int,
    means: Sequence[float],
    stds: Sequence[float],
) -> tuple[Tensor, Tensor]:
    """``BBoxHead.get_targets`` (concatenated): labels (K,) with background ``num_classes`` and (K, 4) deltas
    of the positives (zeros for negatives), K = every image's sampled RoIs, positives first per image."""
    labels, deltas = [], []
    for s in samples:
        num_pos, num_neg = s.pos_inds.numel(), s.neg_inds.numel()
        label = torch.full((num_pos + num_neg,), num_classes, dtype=torch.long, device=s.priors.device)
        label[:num_pos] = s.pos_gt_labels
        delta = s.priors.new_zeros((num_pos + num_neg, 4))
        if num_pos:
            delta[:num_pos] = encode_deltas(s.pos_priors, s.pos_gt_boxes, means, stds)
        labels.append(label)
        deltas.append(delta)
    return torch.cat(labels), torch.cat(deltas)


def box_loss(
    cls_scores: Tensor, pred_deltas: Tensor, labels: Tensor, target_deltas: Tensor, num_classes: int
) -> dict[str, Tensor]:
    """``BBoxHead.loss``: softmax CE over (K, C+1) logits averaged over the K RoIs, L1 on the label's deltas of
    (K, 4C) summed over the positives and divided by K, and the top-1 accuracy in percent (``acc``)."""
    count = max(labels.numel(), 1)
    loss_cls = F.cross_entropy(cls_scores.float(), labels, reduction="sum") / (count + _EPS)
    positive = (labels >= 0) & (labels < num_classes)
    if bool(positive.any()):
        per_class = pred_deltas.float().view(pred_deltas.shape[0], -1, 4)  # (K, C, 4)
        chosen = per_class[positive, labels[positive]]  # (P, 4)
        loss_bbox = (chosen - target_deltas[positive]).abs().sum() / (target_deltas.shape[0] + _EPS)
    else:
        loss_bbox = pred_deltas[positive].sum()
    with torch.no_grad():
        acc = (
            (cls_scores.argmax(dim=1) == labels).float().mean() * 100
            if labels.numel()
            else labels.new_zeros(())
        )
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": acc.float()}


def mask_loss(
    mask_logits: Tensor, samples: Sequence[SamplingResult], gt_masks: Sequence[Tensor], mask_size: int
) -> Tensor:
    """``FCNMaskHead.loss_and_target``: BCE (mean over every pixel of every positive RoI) between the positive
    RoIs' (P, num_classes, 28, 28) logits of their labels and ``mask_targets`` cut from the ground-truth
    masks (per image (G, H, W), in input pixels)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum()
    targets = torch.cat(
        [mask_targets(s.pos_priors, s.pos_gt_inds, m, mask_size) for s, m in zip(samples, gt_masks)]
    )  # (P, 28, 28)
    labels = torch.cat([s.pos_gt_labels for s in samples])
    chosen = mask_logits[torch.arange(labels.numel(), device=labels.device), labels]  # (P, 28, 28)
    return F.binary_cross_entropy_with_logits(chosen.float(), targets.to(chosen.device))

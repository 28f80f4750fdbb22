"""Mask R-CNN's training targets and losses (mmdetection 3.3) on small hand-made cases, and a few steps of training."""

import math

import pytest
import torch

from swinkit.models.detection.losses import (
    box_loss,
    box_targets,
    mask_loss,
    pad_shape,
    rpn_loss,
    rpn_targets_single,
    sample_rois,
)
from swinkit.models.detection.mask_rcnn import create_mask_rcnn
from swinkit.models.detection.structures import DetectionTargets, ImageMeta
from swinkit.models.detection.train_config import DetectionTrainConfig
from swinkit.ops.boxes import encode_deltas

CFG = DetectionTrainConfig()


def test_rpn_targets_assign_sample_and_skip_invalid_anchors():
    anchors = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60], [1, 0, 10, 10], [0, 0, 10, 10]]
    )
    valid = torch.tensor([True, True, True, True, False])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    t = rpn_targets_single(anchors, valid, gt, CFG, torch.Generator().manual_seed(0))
    # IoU 1, 0.9, 0, 0.9 -> positives 0, 1, 3; negative 2; the invalid copy of the gt box is not used
    assert t.objectness.tolist() == [1, 1, 0, 1, 0]
    assert t.weights.tolist() == [1, 1, 1, 1, 0]
    assert t.num_sampled == 4
    expected = encode_deltas(anchors[[1]], gt)
    assert torch.allclose(t.deltas[1], expected[0])
    assert t.delta_weights[:, 0].tolist() == [1, 1, 0, 1, 0]


def test_rpn_targets_low_quality_match_and_sample_size():
    anchors = torch.tensor([[0.0, 0, 20, 20], [100, 100, 110, 110]])
    gt = torch.tensor([[0.0, 0, 10, 10]])  # best IoU 0.25 < min_pos_iou 0.3: no positive at all
    t = rpn_targets_single(anchors, torch.ones(2, dtype=torch.bool), gt, CFG)
    assert t.objectness.tolist() == [0, 0] and t.weights.tolist() == [1, 1]
    gt = torch.tensor([[0.0, 0, 12, 12]])  # IoU 0.36: below 0.7 but the gt's best anchor -> positive
    t = rpn_targets_single(anchors, torch.ones(2, dtype=torch.bool), gt, CFG)
    assert t.objectness.tolist() == [1, 0]
    many = torch.tensor(
        [[float(i), 0, i + 10.0, 10] for i in range(0, 1000, 2)]
    )  # 500 anchors, few positives
    t = rpn_targets_single(many, torch.ones(500, dtype=torch.bool), gt, CFG, torch.Generator().manual_seed(1))
    assert t.num_sampled == 256 and int(t.weights.sum()) == 256


def test_rpn_loss_averages_over_sampled_anchors_and_uses_own_pad_shape():
    meta = ImageMeta((32, 32), (32, 32), (1.0, 1.0))
    assert pad_shape(ImageMeta((33, 20), (33, 20), (1.0, 1.0)), 32) == (64, 32)
    scores = [
        torch.zeros(1, 1, 16, 16)
    ]  # one level, stride 4, a 64x64 batch; the image is its top-left 32x32
    deltas = [torch.zeros(1, 4, 16, 16)]
    from swinkit.ops.anchors import multi_level_anchors

    anchors = multi_level_anchors([(16, 16)], (4,), (8,), (1.0,))
    gt = [torch.tensor([[60.0, 60, 64, 64]])]  # only matches anchors outside the image's own 32x32 padding
    out = rpn_loss(scores, deltas, anchors, [meta], gt, CFG, (4,), 32, torch.Generator().manual_seed(0))
    assert out["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=1e-6)  # every sampled logit is 0
    assert out["loss_rpn_bbox"].item() == 0.0  # the gt's anchors are invalid: no positives


def test_box_targets_and_loss_match_hand_computation():
    gen = torch.Generator().manual_seed(0)
    proposals = [torch.tensor([[0.0, 0, 10, 10, 0.9], [40, 40, 50, 50, 0.8]])]
    gts, labels = [torch.tensor([[0.0, 0, 10, 11]])], [torch.tensor([2])]
    samples = sample_rois(proposals, gts, labels, CFG, gen)
    # the gt box (added as a proposal) and proposal 0 are positives; proposal 1 is a negative
    assert samples[0].pos_inds.numel() == 2 and samples[0].neg_inds.numel() == 1
    target_labels, target_deltas = box_targets(samples, 3, (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2))
    assert target_labels.tolist() == [2, 2, 3]  # background is num_classes
    assert torch.allclose(target_deltas[2], torch.zeros(4))
    cls_scores = torch.zeros(3, 4)
    pred = torch.zeros(3, 12)
    out = box_loss(cls_scores, pred, target_labels, target_deltas, 3)
    assert out["loss_cls"].item() == pytest.approx(math.log(4), rel=1e-6)
    assert out["loss_bbox"].item() == pytest.approx(target_deltas.abs().sum().item() / 3, rel=1e-5)
    pred[1, 8:12] = target_deltas[1]  # the label-2 slot of RoI 1 predicts its target exactly
    out2 = box_loss(cls_scores, pred, target_labels, target_deltas, 3)
    assert out2["loss_bbox"].item() == pytest.approx(target_deltas[0].abs().sum().item() / 3, rel=1e-5)


def test_mask_loss_reads_the_label_channel_of_each_positive():
    gen = torch.Generator().manual_seed(0)
    gts, labels = [torch.tensor([[0.0, 0, 28, 28]])], [torch.tensor([1])]
    samples = sample_rois([torch.zeros(0, 5)], gts, labels, CFG, gen)  # only the gt itself, as a proposal
    masks = [torch.zeros(1, 28, 28)]
    masks[0][0, :, :14] = 1.0
    logits = torch.zeros(1, 2, 28, 28)
    assert mask_loss(logits, samples, masks, 28).item() == pytest.approx(math.log(2), rel=1e-6)
    logits[0, 1, :, :14], logits[0, 1, :, 14:] = 20.0, -20.0
    logits[0, 0] = -20.0  # the other class's channel does not count
    assert mask_loss(logits, samples, masks, 28).item() < 1e-6


def _scene():
    metas = [ImageMeta((64, 64), (64, 64), (1.0, 1.0))]
    boxes = [torch.tensor([[8.0, 8, 40, 36], [30, 20, 60, 60]])]
    labels = [torch.tensor([0, 1])]
    masks = torch.zeros(2, 64, 64)
    masks[0, 8:36, 8:40], masks[1, 20:60, 30:60] = 1, 1
    pixels = torch.zeros(1, 3, 64, 64)
    pixels[0, 0, 8:36, 8:40], pixels[0, 1, 20:60, 30:60] = 2.0, 2.0
    return pixels, metas, boxes, labels, [masks]


def test_losses_are_named_deterministic_and_refuse_bad_targets():
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2)
    pixels, metas, boxes, labels, masks = _scene()
    torch.manual_seed(1)  # drop path draws from the global generator; the sampling from ``generator``
    a = model.losses(pixels, metas, boxes, labels, masks, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    b = model.losses(pixels, metas, boxes, labels, masks, generator=torch.Generator().manual_seed(3))
    assert set(a) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask", "acc"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not a["acc"].requires_grad and a["loss_mask"].requires_grad
    torch.manual_seed(1)
    through_forward = model(
        pixels, metas, DetectionTargets(boxes, labels, masks), torch.Generator().manual_seed(3)
    )
    assert through_forward.detections == [] and all(torch.equal(a[k], through_forward.losses[k]) for k in a)
    with pytest.raises(ValueError, match="label outside"):
        model.losses(pixels, metas, boxes, [torch.tensor([0, 2])], masks)
    with pytest.raises(ValueError, match="masks for 2 boxes"):
        model.losses(pixels, metas, boxes, labels, [masks[0][:1]])
    empty = model.losses(pixels, metas, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                         [torch.zeros(0, 64, 64)])  # fmt: skip
    assert empty["loss_mask"].item() == 0.0 and empty["loss_bbox"].item() == 0.0


def test_a_few_steps_on_one_image_reduce_the_total_loss():
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2)
    pixels, metas, boxes, labels, masks = _scene()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    small = DetectionTrainConfig(rpn_num=64, rcnn_num=64, proposal_nms_pre=200, proposal_max_per_img=100)
    totals = []
    for step in range(6):
        gen = torch.Generator().manual_seed(step)
        out = model.losses(pixels, metas, boxes, labels, masks, train_config=small, generator=gen)
        total = sum(v for k, v in out.items() if k.startswith("loss"))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.7 * totals[0]


def test_a_batch_without_positive_rois_still_reaches_every_parameter():
    """DDP needs a gradient for every parameter on every rank: with no object (no positive RoI) the mask and
    box heads still run, on no RoI, and their zero losses touch each of their parameters (mmdet's
    ``mask_preds.sum()`` / ``bbox_pred[pos_inds].sum()``)."""
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2)
    pixels, metas, _, _, _ = _scene()
    out = model.losses(pixels, metas, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                       [torch.zeros(0, 64, 64)], generator=torch.Generator().manual_seed(0))  # fmt: skip
    sum(v for k, v in out.items() if k.startswith("loss")).backward()
    assert out["loss_mask"].item() == 0.0 and out["loss_bbox"].item() == 0.0
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    head = model.roi_head.mask_head.conv_logits.weight.grad
    assert torch.equal(head, torch.zeros_like(head))

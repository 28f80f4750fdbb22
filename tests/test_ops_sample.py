"""Random sampling against a plain port of mmdet's BaseSampler.sample with RandomSampler."""

import torch

from swinkit.ops.assign import max_iou_assign
from swinkit.ops.sample import random_sample


def loop_sample(gt_inds, labels, num, pos_fraction, neg_pos_ub, num_gts, seed):
    """mmdet's sampler with the gts prepended, drawing from the same generator in the same order."""
    g = torch.Generator().manual_seed(seed)
    gt_inds = list(range(1, num_gts + 1)) + gt_inds
    positives = [i for i, v in enumerate(gt_inds) if v > 0]
    if len(positives) > int(num * pos_fraction):
        perm = torch.randperm(len(positives), generator=g)[: int(num * pos_fraction)].tolist()
        positives = [positives[p] for p in perm]
    positives = sorted(set(positives))
    want = num - len(positives)
    if neg_pos_ub >= 0:
        want = min(want, int(neg_pos_ub * max(1, len(positives))))
    negatives = [i for i, v in enumerate(gt_inds) if v == 0]
    if len(negatives) > want:
        negatives = [negatives[p] for p in torch.randperm(len(negatives), generator=g)[:want].tolist()]
    return positives, sorted(set(negatives))


def case(seed=0, n=300, k=5):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    priors = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30 + 2], 1)
    gts = torch.cat([xy[:k] + 1, xy[:k] + 25], 1)
    labels = torch.arange(k) + 2
    return priors, gts, labels, max_iou_assign(priors, gts, 0.5, 0.5, 0.5, gt_labels=labels)


def test_random_sample_matches_mmdet_port():
    priors, gts, labels, assign = case()
    for num, fraction, ub in [(64, 0.25, -1), (512, 0.25, -1), (32, 0.5, 2)]:
        generator = torch.Generator().manual_seed(7)
        got = random_sample(
            assign, num, fraction, ub, True, generator, priors=priors, gt_boxes=gts, gt_labels=labels
        )
        pos, neg = loop_sample(assign.gt_inds.tolist(), labels, num, fraction, ub, len(gts), seed=7)
        assert got.pos_inds.tolist() == pos and got.neg_inds.tolist() == neg
        assert len(pos) + len(neg) <= num and len(pos) <= int(num * fraction)
        torch.testing.assert_close(got.pos_gt_boxes, gts[got.pos_gt_inds])
        assert got.pos_is_gt.tolist() == [i < len(gts) for i in pos]
        assert got.pos_gt_labels.tolist() == labels[got.pos_gt_inds].tolist()
        torch.testing.assert_close(got.pos_priors[got.pos_is_gt], gts[got.pos_inds[got.pos_is_gt]])


def test_sampling_is_reproducible_with_a_generator_and_varies_across_seeds():
    priors, gts, labels, assign = case(1)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return random_sample(
            assign, 64, 0.25, generator=generator, priors=priors, gt_boxes=gts, gt_labels=labels
        )

    assert torch.equal(draw(3).neg_inds, draw(3).neg_inds) and not torch.equal(
        draw(3).neg_inds, draw(4).neg_inds
    )


def test_without_gt_proposals_and_without_gts():
    priors, gts, labels, assign = case(2)
    got = random_sample(
        assign, 256, 0.5, add_gt_as_proposals=False, priors=priors, gt_boxes=gts, gt_labels=labels
    )
    assert len(got.priors) == len(priors) and not got.pos_is_gt.any()
    empty = max_iou_assign(priors, torch.zeros(0, 4), 0.7, 0.3, 0.3)
    no_labels = torch.zeros(0, dtype=torch.long)
    none = random_sample(empty, 256, 0.5, priors=priors, gt_boxes=torch.zeros(0, 4), gt_labels=no_labels)
    assert none.pos_inds.numel() == 0 and none.neg_inds.numel() == 256 and none.pos_gt_boxes.shape == (0, 4)

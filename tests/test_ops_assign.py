"""MaxIoU assignment against a per-box, per-gt loop port of mmdet's MaxIoUAssigner."""

import pytest
import torch

from swinkit.ops.assign import add_gt_to_assignment, max_iou_assign
from swinkit.ops.boxes import box_iou


def loop_assign(
    boxes, gts, labels, pos, neg, min_pos, low_quality=True, assign_all=True, ignore=None, ignore_thr=-1
):
    k, n = len(gts), len(boxes)
    if k == 0 or n == 0:
        return [0 if k == 0 else -1] * n, [0.0] * n, [-1] * n
    iou = box_iou(gts, boxes).tolist()
    if ignore is not None and ignore_thr > 0:
        iof = box_iou(boxes, ignore, mode="iof").tolist()
        for j in range(n):
            if max(iof[j]) > ignore_thr:
                for i in range(k):
                    iou[i][j] = -1.0
    inds, best = [], []
    for j in range(n):
        column = [iou[i][j] for i in range(k)]
        m = max(column)
        best.append(m)
        inds.append(column.index(m) + 1 if m >= pos else (0 if 0 <= m < neg else -1))
    if low_quality:
        for i in range(k):
            gt_max = max(iou[i])
            if gt_max >= min_pos:
                targets = (
                    [j for j in range(n) if iou[i][j] == gt_max] if assign_all else [iou[i].index(gt_max)]
                )
                for j in targets:
                    inds[j] = i + 1
    return inds, best, [labels[g - 1].item() if g > 0 else -1 for g in inds]


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) * 40).round()
    wh = (torch.rand(n, 2, generator=g) * 20).round() + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize(
    "thresholds, low_quality, assign_all",
    [((0.7, 0.3, 0.3), True, True), ((0.5, 0.5, 0.5), True, False), ((0.5, 0.4, 0.0), False, True)],
)
def test_max_iou_assign_matches_loop(thresholds, low_quality, assign_all):
    boxes = torch.cat([random_boxes(60, 0), random_boxes(10, 0)])  # duplicates: exact IoU ties
    gts, labels = random_boxes(6, 1), torch.tensor([3, 1, 4, 1, 5, 9])
    got = max_iou_assign(boxes, gts, *thresholds, low_quality, assign_all, gt_labels=labels)
    inds, best, lab = loop_assign(boxes, gts, labels, *thresholds, low_quality, assign_all)
    assert got.gt_inds.tolist() == inds and got.labels.tolist() == lab
    torch.testing.assert_close(got.max_overlaps, torch.tensor(best))
    assert got.num_gts == 6


def test_ignored_boxes_and_neg_interval():
    boxes, gts = random_boxes(50, 2), random_boxes(4, 3)
    ignore = torch.tensor([[0.0, 0.0, 25.0, 25.0]])
    got = max_iou_assign(boxes, gts, 0.5, 0.4, 0.3, ignore_iof_thr=0.5, gt_boxes_ignore=ignore)
    inds, _, _ = loop_assign(
        boxes, gts, torch.zeros(4, dtype=torch.long), 0.5, 0.4, 0.3, ignore=ignore, ignore_thr=0.5
    )
    assert got.gt_inds.tolist() == inds and (got.gt_inds == -1).any()
    interval = max_iou_assign(boxes, gts, 0.5, (0.1, 0.4), 0.3)
    low = interval.max_overlaps < 0.1
    assert (interval.gt_inds[low & (interval.gt_inds <= 0)] == -1).all()


def test_mmdet_docstring_example_and_empty_cases():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0]])
    got = max_iou_assign(priors, torch.tensor([[0.0, 0.0, 10.0, 9.0]]), 0.5, 0.5, gt_labels=torch.tensor([0]))
    assert got.gt_inds.tolist() == [1, 0]
    no_gt = max_iou_assign(priors, torch.zeros(0, 4), 0.5, 0.5)
    assert no_gt.gt_inds.tolist() == [0, 0] and no_gt.labels.tolist() == [-1, -1] and no_gt.num_gts == 0
    no_boxes = max_iou_assign(torch.zeros(0, 4), priors, 0.5, 0.5)
    assert no_boxes.gt_inds.shape == (0,) and no_boxes.max_overlaps.shape == (0,)


def test_add_gt_prepends_self_assignments():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0]])
    result = max_iou_assign(
        priors, torch.tensor([[0.0, 0.0, 10.0, 9.0]]), 0.5, 0.5, gt_labels=torch.tensor([7])
    )
    added = add_gt_to_assignment(result, torch.tensor([7]))
    assert added.gt_inds.tolist() == [1, 1, 0] and added.labels.tolist() == [7, 7, -1]
    assert added.max_overlaps[0].item() == 1.0 and result.gt_inds.tolist() == [1, 0]

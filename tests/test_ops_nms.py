"""NMS, batched NMS and multiclass NMS against loop ports of mmcv's nms_cpu / batched_nms and mmdet's multiclass_nms."""

import importlib

import numpy as np
import pytest
import torch

from swinkit.ops import batched_nms, multiclass_nms, nms


def loop_nms(boxes, scores, thr, offset=0):
    """mmcv's ``nms_cpu`` in float32: the outer loop over ranked boxes, the inner one over later boxes as a vector."""
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long)
    b = boxes.numpy().astype(np.float32)
    areas = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    order = scores.sort(0, descending=True)[1].numpy()
    select = np.ones(len(order), dtype=bool)
    for _i in range(len(order)):
        if not select[_i]:
            continue
        i, later = order[_i], order[_i + 1 :]
        w = np.maximum(
            np.float32(0), np.minimum(b[i, 2], b[later, 2]) - np.maximum(b[i, 0], b[later, 0]) + offset
        )
        h = np.maximum(
            np.float32(0), np.minimum(b[i, 3], b[later, 3]) - np.maximum(b[i, 1], b[later, 1]) + offset
        )
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (areas[i] + areas[later] - inter)
        select[_i + 1 :] &= ~(ovr > thr)
    return torch.from_numpy(order[select])


def random_case(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size - 10
    wh = torch.rand(n, 2, generator=g) * 30
    wh[::11] = 0.0
    scores = (torch.rand(n, generator=g) * 10).round() / 10  # many ties
    return torch.cat([xy, xy + wh], 1), scores


@pytest.mark.parametrize("n, seed, thr", [(40, 0, 0.5), (300, 1, 0.3), (520, 2, 0.7)])
def test_nms_matches_loop(n, seed, thr):
    boxes, scores = random_case(n, seed)
    assert torch.equal(nms(boxes, scores, thr), loop_nms(boxes, scores, thr))


def test_nms_offset_one_matches_loop():
    boxes, scores = random_case(120, 5)
    assert torch.equal(nms(boxes, scores, 0.4, offset=1), loop_nms(boxes, scores, 0.4, offset=1))


def test_nms_chain_of_boxes_across_blocks():
    # Each box overlaps only its neighbours: keeps every other box, a long dependency chain through many blocks.
    x = torch.arange(1100, dtype=torch.float32) * 5
    boxes = torch.stack([x, torch.zeros_like(x), x + 10, torch.full_like(x, 10)], 1)
    scores = torch.linspace(1, 0, 1100)
    keep = nms(boxes, scores, 0.2)
    assert torch.equal(keep, torch.arange(0, 1100, 2))


def test_nms_hand_made_threshold_is_strict_and_outside_boxes_kept():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [-30.0, -30.0, -20.0, -20.0], [3.0, 3.0, 3.0, 3.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2, 3]  # IoU exactly 0.5 does not suppress
    assert nms(boxes, scores, 0.49).tolist() == [0, 2, 3]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_nms_ties_follow_the_score_sort():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == scores.sort(0, descending=True)[1][:1].tolist()


def loop_batched_nms(boxes, scores, idxs, thr):
    keep = []
    for c in idxs.unique().tolist():
        members = (idxs == c).nonzero().view(-1)
        keep += members[loop_nms(boxes[members], scores[members], thr)].tolist()
    keep = torch.tensor(keep, dtype=torch.long)
    return keep[scores[keep].sort(descending=True, stable=True)[1]]


def test_batched_nms_is_per_class_and_split_path_agrees():
    boxes, scores = random_case(250, 3)
    scores = scores + torch.arange(250) * 1e-5  # distinct scores: both paths give one order
    idxs = torch.randint(0, 5, (250,), generator=torch.Generator().manual_seed(4))
    dets, keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, loop_batched_nms(boxes, scores, idxs, 0.5))
    torch.testing.assert_close(dets, torch.cat([boxes[keep], scores[keep, None]], 1))
    dets_split, keep_split = batched_nms(boxes, scores, idxs, 0.5, split_thr=100)
    assert torch.equal(keep_split, keep) and torch.equal(dets_split, dets)
    _, agnostic = batched_nms(boxes, scores, idxs, 0.5, class_agnostic=True)
    assert torch.equal(agnostic, nms(boxes, scores, 0.5))


def test_batched_nms_empty():
    dets, keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert dets.shape == (0, 5) and keep.shape == (0,)


def loop_multiclass_nms(bboxes, scores, score_thr, thr, max_num):
    n, c = scores.shape[0], scores.shape[1] - 1
    rows = []
    for i in range(n):
        for k in range(c):
            box = bboxes[i, 4 * k : 4 * k + 4] if bboxes.shape[1] > 4 else bboxes[i]
            if scores[i, k] > score_thr:
                rows.append((i * c + k, box, scores[i, k], k))
    if not rows:
        return torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    flat = torch.tensor([r[0] for r in rows])
    b = torch.stack([r[1] for r in rows])
    s = torch.stack([r[2] for r in rows])
    lab = torch.tensor([r[3] for r in rows])
    keep = loop_batched_nms(b, s, lab, thr)[:max_num]
    return torch.cat([b[keep], s[keep, None]], 1), lab[keep], flat[keep]


@pytest.mark.parametrize("class_specific", [True, False])
def test_multiclass_nms_matches_loop(class_specific):
    g = torch.Generator().manual_seed(6)
    n, c = 60, 4
    base, _ = random_case(n, 7)
    bboxes = (base.repeat(1, c) + torch.rand(n, 4 * c, generator=g) * 4) if class_specific else base
    scores = torch.rand(n, c + 1, generator=g).softmax(-1)
    dets, labels, keep = multiclass_nms(bboxes, scores, 0.15, 0.5, max_num=25)
    ref_dets, ref_labels, ref_keep = loop_multiclass_nms(bboxes, scores, 0.15, 0.5, 25)
    assert torch.equal(keep, ref_keep) and torch.equal(labels, ref_labels)
    torch.testing.assert_close(dets, ref_dets)
    assert len(dets) == 25


def test_multiclass_nms_drops_background_and_handles_no_survivors():
    bboxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([[0.01, 0.02, 0.97]])  # only the background column scores high
    dets, labels, keep = multiclass_nms(bboxes, scores, 0.05, 0.5, 100)
    assert dets.shape == (0, 5) and labels.shape == (0,) and keep.shape == (0,)
    with pytest.raises(ValueError, match="classes"):
        multiclass_nms(torch.zeros(2, 8), torch.zeros(2, 4), 0.05, 0.5)


@pytest.mark.parametrize("shift", [0.0, 10.0])
def test_batched_nms_equals_mmcv_offset_trick_with_ties(shift):
    # shift 10 keeps every coordinate >= 0 (the class-by-class path); shift 0 leaves some negative (one NMS).
    boxes, scores = random_case(300, 8)
    boxes = boxes + shift
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(9))
    offset_boxes = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]  # mmcv's boxes_for_nms
    _, keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, loop_nms(offset_boxes, scores, 0.5))


def spread_case(n, seed, width=1300.0, height=800.0):
    """Mask R-CNN-sized boxes: a few wide ones, many small ones, clusters of near-duplicates and equal scores."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) - 20
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([width, height]) * 0.6
    wh[::7] = 0.0  # degenerate boxes
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[n // 2 :: 3] = (
        boxes[n // 2 - 1] + torch.rand(len(boxes[n // 2 :: 3]), 4, generator=g) * 6
    )  # a cluster
    scores = (torch.rand(n, generator=g) * 50).round() / 50  # equal scores
    return boxes, scores


@pytest.mark.parametrize("n, seed, thr", [(1500, 11, 0.7), (3000, 12, 0.5), (700, 13, 0.0), (300, 14, -0.1)])
def test_nms_matches_loop_at_mask_rcnn_sizes(n, seed, thr):
    # Thousands of boxes: many IoU tiles and greedy blocks; threshold 0 (any overlap) and negative (all pairs).
    boxes, scores = spread_case(n, seed)
    assert torch.equal(nms(boxes, scores, thr), loop_nms(boxes, scores, thr))


def test_nms_pairs_near_the_x_reach_of_a_tile_are_not_lost():
    # Boxes touching in x only through the +1 offset, and far-apart coordinates where float32 rounds.
    x = torch.arange(600, dtype=torch.float32) * 10 + 1e5
    boxes = torch.stack([x, torch.zeros_like(x), x + 9.5, torch.full_like(x, 9)], 1)
    scores = torch.rand(600, generator=torch.Generator().manual_seed(15))
    for offset in (0, 1):
        assert torch.equal(
            nms(boxes, scores, 0.0, offset=offset), loop_nms(boxes, scores, 0.0, offset=offset)
        )
    assert len(nms(boxes, scores, 0.0, offset=1)) < 600 == len(nms(boxes, scores, 0.0))


@pytest.mark.parametrize("shift", [-30.0, 0.0])
def test_batched_nms_many_classes_matches_mmcv_offset_trick(shift):
    boxes, scores = spread_case(2000, 16)
    boxes = boxes + shift
    idxs = torch.randint(0, 80, (2000,), generator=torch.Generator().manual_seed(17))
    offset_boxes = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    _, keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, loop_nms(offset_boxes, scores, 0.5))


def test_nms_evaluates_only_pairs_that_can_exceed_the_threshold(monkeypatch):
    # The speed of NMS at Mask R-CNN sizes is the number of IoUs computed: far fewer than all pairs.
    module = importlib.import_module("swinkit.ops.nms")
    computed = []
    pairwise = module._pairwise_iou
    monkeypatch.setattr(
        module, "_pairwise_iou", lambda a, *rest: computed.append(len(a) * len(rest[1])) or pairwise(a, *rest)
    )
    boxes, scores = spread_case(3000, 12)
    nms(boxes, scores, 0.7)
    assert sum(computed) < 0.3 * 3000**2
    computed.clear()
    batched_nms(
        boxes, scores, torch.randint(0, 80, (3000,), generator=torch.Generator().manual_seed(18)), 0.5
    )
    assert sum(computed) < 0.15 * 3000**2  # the class offsets keep 80 classes apart

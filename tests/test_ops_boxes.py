"""Box geometry and the delta coder against slow per-box loops (mmdet's bbox_overlaps, bbox2delta, delta2bbox)."""

import math

import pytest
import torch

from swinkit.ops import box_area, box_iou, clip_boxes, decode_deltas, encode_deltas, scale_boxes


def loop_iou(boxes1, boxes2, mode="iou", eps=1e-6):
    out = torch.zeros(len(boxes1), len(boxes2))
    for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(boxes2.tolist()):
            w = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
            h = max(min(ay2, by2) - max(ay1, by1), 0.0)
            inter = w * h
            area_a = (ax2 - ax1) * (ay2 - ay1)
            area_b = (bx2 - bx1) * (by2 - by1)
            union = area_a + area_b - inter if mode == "iou" else area_a
            out[i, j] = inter / max(union, eps)
    return out


def random_boxes(n, size=50.0, generator=None):
    xy = torch.rand(n, 2, generator=generator) * size - 10
    wh = torch.rand(n, 2, generator=generator) * size / 2
    wh[::7] = 0.0  # degenerate boxes
    return torch.cat([xy, xy + wh], dim=1)


HAND = torch.tensor(
    [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 20.0, 30.0], [-5.0, -5.0, 2.0, 2.0]]
)


def test_box_iou_hand_made_values():
    iou = box_iou(HAND, HAND)
    assert iou[0, 1].item() == pytest.approx(25 / 175)
    assert iou[0, 0].item() == pytest.approx(1.0)
    assert iou[2, 2].item() == 0.0  # zero-area box: 0 / eps
    assert iou[0, 3].item() == pytest.approx(4 / (100 + 49 - 4))
    iof = box_iou(HAND, HAND, mode="iof")
    assert iof[3, 0].item() == pytest.approx(4 / 49)


@pytest.mark.parametrize("mode", ["iou", "iof"])
def test_box_iou_matches_loop(mode):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(23, generator=g), random_boxes(17, generator=g)
    torch.testing.assert_close(box_iou(a, b, mode=mode), loop_iou(a, b, mode), rtol=1e-5, atol=1e-6)


def test_box_iou_empty_shapes():
    one = HAND[:1]
    assert box_iou(torch.zeros(0, 4), one).shape == (0, 1)
    assert box_iou(one, torch.zeros(0, 4)).shape == (1, 0)
    assert box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)


def test_box_iou_rejects_bad_shape_and_mode():
    with pytest.raises(ValueError, match="shape"):
        box_iou(torch.zeros(3, 5), HAND)
    with pytest.raises(ValueError, match="mode"):
        box_iou(HAND, HAND, mode="giou")


def test_area_clip_scale():
    assert box_area(HAND).tolist() == [100.0, 100.0, 0.0, 49.0]
    clipped = clip_boxes(torch.tensor([[-3.0, -1.0, 40.0, 12.0]]), (10, 30))
    assert clipped.tolist() == [[0.0, 0.0, 30.0, 10.0]]
    assert scale_boxes(HAND[:1], (2.0, 0.5)).tolist() == [[0.0, 0.0, 20.0, 5.0]]


def loop_encode(p, g, means, stds):
    out = []
    for (px1, py1, px2, py2), (gx1, gy1, gx2, gy2) in zip(p.tolist(), g.tolist()):
        pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
        d = [((gx1 + gx2) / 2 - (px1 + px2) / 2) / pw, ((gy1 + gy2) / 2 - (py1 + py2) / 2) / ph]
        d += [math.log(gw / pw), math.log(gh / ph)]
        out.append([(v - m) / s for v, m, s in zip(d, means, stds)])
    return torch.tensor(out)


def loop_decode(rois, deltas, means, stds, max_shape, wh_ratio_clip=16 / 1000):
    max_ratio = abs(math.log(wh_ratio_clip))
    out = []
    for roi, row in zip(rois.tolist(), deltas.tolist()):
        boxes = []
        for c in range(len(row) // 4):
            dx, dy, dw, dh = [v * s + m for v, s, m in zip(row[4 * c : 4 * c + 4], stds, means)]
            pw, ph = roi[2] - roi[0], roi[3] - roi[1]
            cx, cy = (roi[0] + roi[2]) / 2 + pw * dx, (roi[1] + roi[3]) / 2 + ph * dy
            w = pw * math.exp(min(max(dw, -max_ratio), max_ratio))
            h = ph * math.exp(min(max(dh, -max_ratio), max_ratio))
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            if max_shape is not None:
                box = [min(max(v, 0.0), max_shape[1 - k % 2]) for k, v in enumerate(box)]
            boxes += box
        out.append(boxes)
    return torch.tensor(out)


def test_encode_matches_loop_and_decode_inverts_it():
    g = torch.Generator().manual_seed(2)
    proposals, gt = random_boxes(20, generator=g), random_boxes(20, generator=g)
    proposals[:, 2:] += 1.0
    gt[:, 2:] += 1.0
    means, stds = (0.1, -0.1, 0.0, 0.2), (0.1, 0.1, 0.2, 0.2)
    deltas = encode_deltas(proposals, gt, means, stds)
    torch.testing.assert_close(deltas, loop_encode(proposals, gt, means, stds), rtol=1e-4, atol=1e-5)
    decoded = decode_deltas(proposals, deltas, means, stds, wh_ratio_clip=1e-6)
    torch.testing.assert_close(decoded, gt, rtol=1e-4, atol=1e-4)


def test_decode_class_specific_matches_loop_with_clipping():
    g = torch.Generator().manual_seed(3)
    rois = random_boxes(9, generator=g)
    deltas = torch.randn(9, 12, generator=g) * 3  # 3 classes, large deltas hit the wh clamp
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    got = decode_deltas(rois, deltas, means, stds, max_shape=(30, 40))
    torch.testing.assert_close(got, loop_decode(rois, deltas, means, stds, (30, 40)), rtol=1e-4, atol=1e-4)
    assert got[:, 0::2].max() <= 40 and got[:, 1::2].max() <= 30 and got.min() >= 0


def test_decode_mmdet_docstring_example():
    rois = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]]
    )
    deltas = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, -1.0], [0.7, -1.9, -0.5, 0.3]]
    )
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [0.1409, 0.1409, 2.8591, 2.8591],
            [0.0, 0.3161, 4.1945, 0.6839],
            [5.0, 5.0, 5.0, 5.0],
        ]
    )
    torch.testing.assert_close(decode_deltas(rois, deltas, max_shape=(32, 32)), expected, atol=1e-4, rtol=0)


def test_decode_ctr_clamp_and_empty():
    rois = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    got = decode_deltas(rois, torch.tensor([[1.0, -1.0, 0.0, 0.0]]), add_ctr_clamp=True, ctr_clamp=32)
    assert got.tolist() == [[32.0, -32.0, 132.0, 68.0]]
    assert decode_deltas(torch.zeros(0, 4), torch.zeros(0, 8)).shape == (0, 8)
    with pytest.raises(ValueError, match="deltas must have shape"):
        decode_deltas(rois, torch.zeros(1, 6))

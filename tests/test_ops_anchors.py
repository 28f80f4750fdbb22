"""Anchors against mmdet's AnchorGenerator docstring example and per-location loops."""

import math

import pytest
import torch

from swinkit.ops.anchors import (
    base_anchors,
    grid_anchors,
    multi_level_anchors,
    multi_level_valid_flags,
    valid_flags,
)


def loop_base(base_size, scales, ratios, center_offset=0.0, scale_major=True):
    pairs = (
        [(r, s) for r in ratios for s in scales] if scale_major else [(r, s) for s in scales for r in ratios]
    )
    c = center_offset * base_size
    out = []
    for r, s in pairs:
        w, h = base_size / math.sqrt(r) * s, base_size * math.sqrt(r) * s
        out.append([c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    return torch.tensor(out)


def loop_grid(base, size, stride):
    rows = []
    for y in range(size[0]):
        for x in range(size[1]):
            for a in base.tolist():
                rows.append([a[0] + x * stride, a[1] + y * stride, a[2] + x * stride, a[3] + y * stride])
    return torch.tensor(rows).view(-1, 4)


def test_mmdet_docstring_example():
    anchors = grid_anchors(base_anchors(9, [1.0], [1.0]), (2, 2), 16)
    expected = torch.tensor(
        [[-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5], [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]]
    )
    assert torch.equal(anchors, expected)


@pytest.mark.parametrize("scale_major, offset", [(True, 0.0), (False, 0.5)])
def test_base_and_grid_match_loops(scale_major, offset):
    base = base_anchors(8, [4.0, 8.0], [0.5, 1.0, 2.0], center_offset=offset, scale_major=scale_major)
    torch.testing.assert_close(base, loop_base(8, [4.0, 8.0], [0.5, 1.0, 2.0], offset, scale_major))
    torch.testing.assert_close(grid_anchors(base, (3, 5), 8), loop_grid(base, (3, 5), 8))


def test_mask_rcnn_levels():
    sizes = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]
    levels = multi_level_anchors(sizes)
    assert [len(a) for a in levels] == [h * w * 3 for h, w in sizes]
    torch.testing.assert_close(
        levels[0][:3],
        torch.tensor(
            [
                [-22.6274, -11.3137, 22.6274, 11.3137],
                [-16.0, -16.0, 16.0, 16.0],
                [-11.3137, -22.6274, 11.3137, 22.6274],
            ]
        ),
    )
    assert grid_anchors(base_anchors(4, [8], [1.0]), (0, 3), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="one stride per level"):
        multi_level_anchors(sizes[:2])


def test_valid_flags_match_loop():
    flags = valid_flags((3, 4), (2, 3), 2)
    expected = [y < 2 and x < 3 for y in range(3) for x in range(4) for _ in range(2)]
    assert flags.tolist() == expected
    per_level = multi_level_valid_flags([(8, 8), (4, 4)], (27, 13), strides=(4, 8), num_base_anchors=1)
    assert per_level[0].view(8, 8)[:7, :4].all() and not per_level[0].view(8, 8)[7:].any()
    assert not per_level[0].view(8, 8)[:, 4:].any() and per_level[1].view(4, 4)[:4, :2].all()
    with pytest.raises(ValueError, match="larger than the feature map"):
        valid_flags((2, 2), (3, 1), 1)

"""Mask targets against a per-proposal loop of mmdet's mask_target_single over the RoIAlign loop reference."""

import pytest
import torch
from test_ops_roi_align import loop_roi_align

from swinkit.ops.mask_targets import mask_targets


def loop_mask_targets(proposals, gt_inds, masks, size):
    out = []
    for box, g in zip(proposals.tolist(), gt_inds.tolist()):
        h, w = masks.shape[1:]
        x1, x2 = min(max(box[0], 0), w), min(max(box[2], 0), w)
        y1, y2 = min(max(box[1], 0), h), min(max(box[3], 0), h)
        roi = torch.tensor([[0.0, x1, y1, x2, y2]])
        out.append(loop_roi_align(masks[g][None, None].float(), roi, (size, size), 1.0)[0, 0] >= 0.5)
    return torch.stack(out).float()


def masks_and_proposals():
    masks = torch.zeros(3, 30, 40, dtype=torch.uint8)
    masks[0, 5:20, 8:30] = 1
    masks[1, 12:29, 2:15] = 1
    masks[1, 15:20, 5:10] = 0  # a hole
    masks[2, 0:6, 30:40] = 1  # touches the border
    proposals = torch.tensor(
        [
            [8.0, 5.0, 30.0, 20.0],  # exactly object 0
            [0.5, 10.2, 17.3, 29.9],
            [25.0, -4.0, 45.0, 8.0],  # over the border: clipped
            [50.0, 40.0, 60.0, 50.0],  # outside: clipped to a zero-size box
            [10.0, 10.0, 10.0, 20.0],  # zero width
        ]
    )
    return masks, proposals, torch.tensor([0, 1, 2, 2, 0])


def test_mask_targets_match_loop():
    masks, proposals, inds = masks_and_proposals()
    got = mask_targets(proposals, inds, masks, 7)
    assert torch.equal(got, loop_mask_targets(proposals, inds, masks, 7))
    assert got[0].all() and got[3].sum() == 0 and got[4].sum() == 0 and got.dtype == torch.float32
    assert 0 < got[1].mean() < 1  # the hole and the background are zeros


def test_mask_targets_default_size_and_empty():
    masks, proposals, inds = masks_and_proposals()
    assert mask_targets(proposals[:2], inds[:2], masks).shape == (2, 28, 28)
    assert mask_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), masks).shape == (0, 28, 28)
    with pytest.raises(ValueError, match="gt index"):
        mask_targets(proposals[:1], torch.tensor([3]), masks)

"""Mask pasting against a per-box port of mmdet's CPU path (_do_paste_mask, skip_empty=True) and mask boxes."""

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swinkit.ops.masks import masks_to_boxes, paste_masks


def do_paste_mask(masks, boxes, img_h, img_w, skip_empty):
    """mmdet's ``_do_paste_mask`` line by line (masks ``(N, 1, h, w)``)."""
    if skip_empty:
        x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
        x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
        y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    else:
        x0_int, y0_int, x1_int, y1_int = 0, 0, img_w, img_h
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    n = masks.shape[0]
    img_y = torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    img_x[torch.isinf(img_x)] = 0
    img_y[torch.isinf(img_y)] = 0
    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    img_masks = F.grid_sample(masks.to(dtype=torch.float32), grid, align_corners=False)
    if skip_empty:
        return img_masks[:, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))
    return img_masks[:, 0], ()


def loop_paste(probs, boxes, shape, threshold, skip_empty=True):
    """``FCNMaskHead._predict_by_feat_single``'s chunk loop on CPU: one box per chunk."""
    out = torch.zeros(len(probs), *shape, dtype=torch.bool)
    for i in range(len(probs)):
        if skip_empty and (boxes[i, 0] >= shape[1] + 1 or boxes[i, 1] >= shape[0] + 1):
            continue  # torch.arange raises for these regions in mmdet (it clips boxes first); nothing is pasted
        chunk, spatial = do_paste_mask(
            probs[i : i + 1, None], boxes[i : i + 1], shape[0], shape[1], skip_empty
        )
        out[(slice(i, i + 1),) + spatial] = chunk >= threshold
    return out


BOXES = torch.tensor(
    [
        [3.2, 4.7, 20.9, 15.1],
        [-6.0, -3.0, 8.0, 9.5],  # over the top-left border
        [30.0, 20.0, 45.0, 33.0],  # over the bottom-right border
        [50.0, 50.0, 60.0, 60.0],  # outside the image
        [10.0, 10.0, 10.0, 18.0],  # zero width
        [0.0, 0.0, 40.0, 28.0],  # the whole image: a large box relative to the mask
        [12.5, 7.5, 13.5, 8.5],  # one pixel
    ]
)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0])
def test_paste_masks_matches_mmdet_cpu_path(threshold):
    probs = torch.rand(len(BOXES), 7, 9, generator=torch.Generator().manual_seed(0))
    probs[5] = 1.0  # saturated probabilities reach 0.5 exactly on the box edge
    got = paste_masks(probs, BOXES, (28, 40), threshold)
    assert torch.equal(got, loop_paste(probs, BOXES, (28, 40), threshold))
    assert not got[3].any() and got.dtype == torch.bool  # the box outside the image pastes nothing


def test_whole_image_paste_agrees_at_half_except_for_degenerate_boxes():
    # mmdet's GPU path (whole image, skip_empty=False) equals the CPU path at threshold 0.5, except that a
    # zero-width box's infinite grid coordinates become 0 and smear its centre column over the whole row.
    probs = torch.rand(len(BOXES), 28, 28, generator=torch.Generator().manual_seed(1))
    whole = loop_paste(probs, BOXES, (28, 40), 0.5, skip_empty=False)
    got = paste_masks(probs, BOXES, (28, 40))
    proper = [0, 1, 2, 3, 5, 6]
    assert torch.equal(got[proper], whole[proper])
    assert whole[4].sum() > got[4].sum()


def test_paste_masks_chunks_and_empty(monkeypatch):
    probs = torch.rand(len(BOXES), 5, 5, generator=torch.Generator().manual_seed(2))
    whole = paste_masks(probs, BOXES, (28, 40), 0.4)
    monkeypatch.setattr(importlib.import_module("swinkit.ops.masks"), "_CHUNK_ELEMENTS", 1)
    assert torch.equal(paste_masks(probs, BOXES, (28, 40), 0.4), whole)
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(probs, BOXES[:2], (28, 40))


def test_masks_to_boxes_matches_loop():
    masks = torch.zeros(4, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    masks[3, 0, 0] = masks[3, 4, 6] = True
    expected = []
    for m in masks.numpy():
        ys, xs = np.nonzero(m)
        expected.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    assert masks_to_boxes(masks).tolist() == torch.tensor(expected, dtype=torch.float32).tolist()
    assert masks_to_boxes(torch.zeros(0, 6, 8)).shape == (0, 4)

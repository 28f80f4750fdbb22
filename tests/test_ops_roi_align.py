"""RoIAlign and the multi-level RoI extractor against a line-by-line loop port of mmcv's CPU kernel."""

import math

import numpy as np
import pytest
import torch

from swinkit.ops import map_roi_levels, multi_level_roi_align, roi_align


def bilinear(f, y, x):
    """mmcv's ``pre_calc_for_bilinear_interpolate`` for one point of one channel map ``f (H, W)``."""
    height, width = f.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.float32(0)
    y, x = max(y, np.float32(0)), max(x, np.float32(0))
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = np.float32(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = np.float32(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * f[y_low, x_low]
        + hy * lx * f[y_low, x_high]
        + ly * hx * f[y_high, x_low]
        + ly * lx * f[y_high, x_high]
    )


def loop_roi_align(features, rois, output_size, spatial_scale, sampling_ratio=0, aligned=True):
    feats = features.numpy().astype(np.float32)
    oh, ow = output_size
    out = np.zeros((len(rois), feats.shape[1], oh, ow), dtype=np.float32)
    s = np.float32(spatial_scale)
    for n, roi in enumerate(rois.numpy().astype(np.float32)):
        off = np.float32(0.5 if aligned else 0.0)
        x1, y1, x2, y2 = roi[1] * s - off, roi[2] * s - off, roi[3] * s - off, roi[4] * s - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, np.float32(1)), max(rh, np.float32(1))
        bh, bw = rh / np.float32(oh), rw / np.float32(ow)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / np.float32(oh))
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / np.float32(ow))
        count = max(gh * gw, 1)
        for c in range(feats.shape[1]):
            f = feats[int(roi[0]), c]
            for ph in range(oh):
                for pw in range(ow):
                    total = np.float32(0)
                    for iy in range(gh):
                        y = y1 + np.float32(ph) * bh + np.float32(iy + 0.5) * bh / np.float32(gh)
                        for ix in range(gw):
                            x = x1 + np.float32(pw) * bw + np.float32(ix + 0.5) * bw / np.float32(gw)
                            total += bilinear(f, y, x)
                    out[n, c, ph, pw] = total / count
    return torch.from_numpy(out)


def make_rois(k, batch, size, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * size * 1.2 - size * 0.2  # some start outside the image
    wh = torch.rand(k, 2, generator=g) * size * 0.8
    wh[::5] = 0.0  # degenerate RoIs
    b = torch.randint(0, batch, (k, 1), generator=g).float()
    return torch.cat([b, xy, xy + wh], 1)


@pytest.mark.parametrize(
    "output_size, scale, ratio, aligned",
    [((7, 7), 0.25, 0, True), ((3, 5), 0.5, 2, True), ((4, 4), 0.25, 0, False)],
)
def test_roi_align_matches_mmcv_loop(output_size, scale, ratio, aligned):
    features = torch.randn(2, 3, 11, 13)
    rois = make_rois(8, 2, 13 / scale, seed=1)
    got = roi_align(features, rois, output_size, scale, ratio, aligned)
    torch.testing.assert_close(
        got, loop_roi_align(features, rois, output_size, scale, ratio, aligned), rtol=1e-5, atol=1e-5
    )


def test_roi_align_edge_rules_on_hand_made_rois():
    features = torch.arange(20, dtype=torch.float32).view(1, 1, 4, 5)
    rois = torch.tensor(
        [
            [
                0,
                1.0,
                1.0,
                2.0,
                2.0,
            ],  # one pixel: after the half-pixel shift its only sample is feature (1, 1)
            [0, 0.5, 0.5, 1.5, 1.5],  # its sample at (0.5, 0.5) averages the four top-left features
            [0, -20.0, -20.0, -10.0, -10.0],  # entirely outside: samples below -1 give zeros
            [0, 4.0, 3.0, 9.0, 6.0],  # over the bottom-right edge: clamped to the last row and column
            [0, 2.0, 2.0, 2.0, 2.0],  # zero size: empty sampling grid gives zeros
        ]
    )
    got = roi_align(features, rois, (1, 1), 1.0)
    torch.testing.assert_close(got, loop_roi_align(features, rois, (1, 1), 1.0))
    assert got.flatten().tolist()[:3] == pytest.approx([6.0, 3.0, 0.0]) and got[4].abs().sum() == 0
    # samples x = 4, 5 (clamped to column 4) and 6, 7, 8 (beyond W: zero); y = 3, 4 (row 3) and 5 (zero)
    assert got[3, 0, 0, 0].item() == pytest.approx(4 * 19 / 15)


def test_roi_align_large_grid_and_empty_and_errors():
    features = torch.randn(1, 2, 9, 9)
    rois = torch.tensor([[0, 0.0, 0.0, 36.0, 36.0], [0, 3.0, 4.0, 30.0, 20.0]])
    torch.testing.assert_close(
        roi_align(features, rois, (2, 2), 0.25),
        loop_roi_align(features, rois, (2, 2), 0.25),
        rtol=1e-5,
        atol=1e-5,
    )
    assert roi_align(features, torch.zeros(0, 5), (7, 7), 0.25).shape == (0, 2, 7, 7)
    with pytest.raises(ValueError, match="non-negative width"):
        roi_align(features, torch.tensor([[0, 5.0, 5.0, 4.0, 6.0]]), (2, 2), 1.0)
    with pytest.raises(ValueError, match="batch index"):
        roi_align(features, torch.tensor([[1, 0.0, 0.0, 4.0, 4.0]]), (2, 2), 1.0)


def test_roi_align_tiny_huge_and_outside_rois_match_the_loop():
    # A RoI far larger than the map (11 x 11 samples per bin), sub-pixel ones, one across the map's corner,
    # one entirely beyond the bottom-right edge and ones of zero width or height.
    features = torch.randn(2, 2, 16, 20)
    rois = torch.tensor(
        [
            [0, -40.0, -30.0, 300.0, 280.0],
            [1, 10.0, 10.0, 10.4, 10.3],
            [1, 70.0, 50.0, 95.0, 75.0],
            [0, 90.0, 70.0, 120.0, 99.0],
            [0, 8.0, 3.0, 8.0, 40.0],
            [1, 3.0, 8.0, 40.0, 8.0],
        ]
    )
    torch.testing.assert_close(
        roi_align(features, rois, (7, 7), 0.25),
        loop_roi_align(features, rois, (7, 7), 0.25),
        rtol=1e-5,
        atol=1e-5,
    )


def test_map_roi_levels_boundaries():
    sizes = torch.tensor([10.0, 111.9, 112.0, 224.0, 448.0, 2000.0])
    rois = torch.stack([torch.zeros(6), torch.zeros(6), torch.zeros(6), sizes, sizes], 1)
    assert map_roi_levels(rois, 4).tolist() == [0, 0, 1, 2, 3, 3]
    assert map_roi_levels(torch.zeros(0, 5), 4).shape == (0,)


def test_multi_level_roi_align_pools_each_roi_at_its_level():
    strides = [4, 8, 16, 32]
    feats = [torch.randn(1, 3, 256 // s, 256 // s) for s in strides]
    rois = torch.tensor(
        [
            [0, 1.0, 1.0, 20.0, 30.0],
            [0, 0.0, 0.0, 150.0, 150.0],
            [0, 3.0, 0.0, 253.0, 250.0],
            [0, 5.0, 5.0, 5.0, 5.0],
        ]
    )
    got = multi_level_roi_align(feats, rois, (7, 7), strides)
    levels = map_roi_levels(rois, 4)
    assert levels.tolist() == [0, 1, 2, 0]  # level 3 is empty
    for k in range(len(rois)):
        level = levels[k].item()
        expected = loop_roi_align(feats[level], rois[k : k + 1], (7, 7), 1 / strides[level])
        torch.testing.assert_close(got[k : k + 1], expected, rtol=1e-5, atol=1e-5)
    assert multi_level_roi_align(feats, torch.zeros(0, 5), (7, 7), strides).shape == (0, 3, 7, 7)
    single = multi_level_roi_align(feats[:1], rois, (7, 7), strides[:1])
    torch.testing.assert_close(single, roi_align(feats[0], rois, (7, 7), 0.25))


def test_roi_align_gradient_is_the_adjoint_of_the_loop():
    # RoIAlign is linear in the features: its gradient must be the transpose of the loop's Jacobian (mmcv's backward).
    rois = torch.tensor([[0, 0.3, -1.2, 4.9, 3.1], [0, 2.0, 1.0, 6.5, 4.5], [0, -3.0, -3.0, -1.0, -1.0]])
    jacobian = torch.stack(
        [loop_roi_align(torch.eye(20)[i].view(1, 1, 4, 5), rois, (2, 3), 1.0).flatten() for i in range(20)],
        dim=1,
    )  # (outputs, inputs)
    features = torch.randn(1, 1, 4, 5, requires_grad=True)
    weights = torch.randn(3, 1, 2, 3)
    (roi_align(features, rois, (2, 3), 1.0) * weights).sum().backward()
    torch.testing.assert_close(features.grad.flatten(), jacobian.T @ weights.flatten(), rtol=1e-5, atol=1e-6)


def test_roi_align_of_a_roi_does_not_depend_on_the_others():
    # One RoI reads its crop from the map as it is; forty read more than the map and go channels-last.
    features = torch.randn(2, 8, 30, 30)
    rois = make_rois(40, 2, 120, seed=5)
    many = roi_align(features, rois, (7, 7), 0.25)
    one_by_one = torch.cat([roi_align(features, rois[k : k + 1], (7, 7), 0.25) for k in range(40)])
    torch.testing.assert_close(many, one_by_one, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        one_by_one[:6], loop_roi_align(features, rois[:6], (7, 7), 0.25), rtol=1e-5, atol=1e-5
    )


def test_roi_align_gives_no_gradient_to_the_rois_as_mmcv():
    # mmcv's RoIAlign backward returns None for the RoIs; only the features are differentiated.
    features = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.5, 20.0, 18.0]], requires_grad=True)
    roi_align(features, rois, (2, 2), 0.25).sum().backward()
    assert rois.grad is None and features.grad.abs().sum() > 0

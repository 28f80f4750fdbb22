"""RoIAlign (mmcv 2.x's ``RoIAlign``, average pooling) and mmdetection's single-level RoI extractor over FPN levels.

Separable: mmcv's bilinear weights factor into a row weight times a column weight (the validity of a sample,
inside ``[-1, size]`` on both axes, too), so a bin's average over its ``grid_h x grid_w`` samples is
``rows[ph] @ crop @ cols[pw]^T``, with per-axis weight matrices summed over the samples (computed for all RoIs
at once). Each RoI then costs two small matrix products on a view of the feature rows and columns its
samples touch, read once and never copied; the backward pass is their transpose, added into the features'
gradient in place (mmcv's ``roi_align_backward``; no gradient to the RoIs). The numbers are mmcv's up to the
float rounding of the regrouped sums.
"""

import torch
from torch import Tensor

__all__ = ["map_roi_levels", "multi_level_roi_align", "roi_align"]


def _sample_coords(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, max_grid: int) -> Tensor:
    """Sampling coordinates along one axis as mmcv's kernel computes them: ``(K,) -> (K, pooled, max_grid)``.

    ``start + p * bin_size + (i + 0.5) * bin_size / grid`` in the RoIs' float type; ``i >= grid`` are padding.
    """
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)
    i = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    grid = grid.clamp(min=1).to(start.dtype)
    return (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i + 0.5) * bin_size[:, None, None] / grid[:, None, None]
    )  # (K, pooled, max_grid)


def _axis_weights(
    start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-axis RoIAlign weights, as mmcv's ``pre_calc_for_bilinear_interpolate``: ``-> (K,), (K,), (K, pooled, S)``.

    Returns the first feature index each RoI touches, how many it touches, and for every output bin the
    summed weight of those indices (padded to the longest span ``S``), divided by the number of samples. A
    sample beyond ``[-1, size]`` (or past the RoI's own ``grid``) weighs nothing; one in ``[-1, 0]`` counts as
    0; one from ``size - 1`` on as ``size - 1``.
    """
    max_grid = max(1, int(grid.max()))
    coord = _sample_coords(start, bin_size, grid, pooled, max_grid)  # (K, pooled, G)
    taken = torch.arange(max_grid, device=grid.device) < grid[:, None, None]
    valid = (coord >= -1.0) & (coord <= size) & taken
    coord = coord.clamp(min=0)
    low = coord.long().clamp(max=size - 1)  # (int) y of a y >= 0
    at_end = low >= size - 1
    high = torch.where(at_end, low, low + 1)
    coord = torch.where(at_end, low.to(coord.dtype), coord)
    frac_high = coord - low
    scale = valid.to(coord.dtype) / grid.clamp(min=1).to(coord.dtype)[:, None, None]
    first = torch.where(valid, low, torch.full_like(low, size)).flatten(1).amin(dim=1).clamp(max=size - 1)
    last = torch.where(valid, high, torch.zeros_like(high)).flatten(1).amax(dim=1)
    spans = (last - first).clamp(min=0) + 1  # (K,)
    longest = int(spans.max())
    low = (low - first[:, None, None]).clamp(0, longest - 1)
    high = (high - first[:, None, None]).clamp(0, longest - 1)
    weights = coord.new_zeros((start.size(0), pooled, longest))
    weights.scatter_add_(2, low, (1 - frac_high) * scale).scatter_add_(2, high, frac_high * scale)
    return first, spans, weights


def _pool_channels_first(features: Tensor, windows: list, rows: Tensor, cols: Tensor, out: Tensor) -> None:
    """Each RoI from a ``(C, h, w)`` view of its crop: for a few RoIs on a large map (no copy of the map)."""
    for k in sorted(range(len(windows)), key=windows.__getitem__):
        b, y, x, h, w = windows[k]
        by_cols = torch.matmul(features[b, :, y : y + h, x : x + w], cols[k, :, :w].T)  # (C, h, ow)
        torch.matmul(rows[k, :, :h], by_cols, out=out[k])  # (C, oh, ow)


def _pool_channels_last(features: Tensor, windows: list, rows: Tensor, cols: Tensor, out: Tensor) -> None:
    """Each RoI from a ``(h, w * C)`` matrix view of its crop in a channels-last copy: for many RoIs per map."""
    last = features.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    channels = last.size(3)
    for k in sorted(range(len(windows)), key=windows.__getitem__):
        b, y, x, h, w = windows[k]
        crop = last[b, y : y + h, x : x + w].reshape(h, w * channels)  # (h, w*C), a view
        by_rows = torch.mm(rows[k, :, :h], crop).view(-1, w, channels)  # (oh, w, C)
        out[k] = torch.matmul(cols[k, :, :w], by_rows).permute(2, 0, 1)  # (C, oh, ow)


class _SeparableRoIAlign(torch.autograd.Function):
    """``features (B, C, H, W) -> (K, C, oh, ow)``: per RoI ``rows_k @ crop_k @ cols_k^T``; backward transposed.

    ``windows`` are the RoIs' ``(batch, y, x, h, w)`` crops. They are visited in sorted order so that
    overlapping crops follow each other in the cache; when the crops add up to more than the map (where the
    copy pays for itself), the map is first copied channels-last, where a crop is one matrix.
    """

    @staticmethod
    def forward(ctx, features: Tensor, windows: list[tuple[int, ...]], rows: Tensor, cols: Tensor) -> Tensor:
        ctx.save_for_backward(rows, cols)
        ctx.windows, ctx.shape = windows, features.shape
        out = features.new_empty(
            (len(windows), features.size(1), rows.size(1), cols.size(1))
        )  # (K, C, oh, ow)
        read = sum(h * w for *_, h, w in windows)
        pool = _pool_channels_last if read > features[:, 0].numel() else _pool_channels_first
        pool(features, windows, rows, cols, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        rows, cols = ctx.saved_tensors
        grad = grad_out.new_zeros(ctx.shape)
        for k, (b, y, x, h, w) in enumerate(ctx.windows):
            by_rows = torch.matmul(rows[k, :, :h].T, grad_out[k])  # (C, h, ow)
            grad[b, :, y : y + h, x : x + w] += torch.matmul(by_rows, cols[k, :, :w])  # (C, h, w)
        return grad, None, None, None


def _roi_geometry(
    rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool
):
    """Per-RoI start, bin size and sampling grid, as mmcv's ``ROIAlignForward``: ``(K, 5) -> (K,) tensors``."""
    oh, ow = output_size
    offset = 0.5 if aligned else 0.0
    scaled = rois[:, 1:] * spatial_scale - offset  # (K, 4)
    roi_w = scaled[:, 2] - scaled[:, 0]
    roi_h = scaled[:, 3] - scaled[:, 1]
    if aligned:
        if bool((roi_w < 0).any() or (roi_h < 0).any()):
            raise ValueError(
                "roi_align got a RoI with x2 < x1 or y2 < y1; RoIs must have non-negative width and height."
            )
    else:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / oh, roi_w / ow
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / oh).long(), torch.ceil(roi_w / ow).long()
    return scaled[:, 1], scaled[:, 0], bin_h, bin_w, grid_h, grid_w


def _pool_rois(features: Tensor, geometry: tuple[Tensor, ...], size: tuple[int, int]) -> Tensor:
    """Pool every RoI ``-> (K, C, oh, ow)``: per-axis weights for all RoIs, then one window per RoI."""
    batch, y0, x0, bin_h, bin_w, grid_h, grid_w = geometry
    top, heights, rows = _axis_weights(y0, bin_h, grid_h, size[0], features.size(2))  # (K, oh, R)
    left, widths, cols = _axis_weights(x0, bin_w, grid_w, size[1], features.size(3))  # (K, ow, W)
    windows = list(zip(*(t.tolist() for t in (batch, top, left, heights, widths))))
    return _SeparableRoIAlign.apply(features, windows, rows.to(features.dtype), cols.to(features.dtype))


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign with average pooling: ``features (B, C, H, W), rois (K, 5) -> (K, C, oh, ow)``, as mmcv's ``RoIAlign``.

    ``rois`` rows are ``batch_index, x1, y1, x2, y2`` in image pixels, mapped to the features by ``spatial_scale``;
    ``aligned`` shifts them by half a pixel; each output bin averages a ``sampling_ratio``-squared grid of bilinear
    samples, or ``ceil(roi_size / output_size)`` per axis when ``sampling_ratio`` is 0 (an empty grid gives zeros).
    """
    if features.dim() != 4 or rois.dim() != 2 or rois.size(1) != 5:
        raise ValueError(
            f"roi_align needs features (B, C, H, W) and rois (K, 5), got {tuple(features.shape)} and {tuple(rois.shape)}."
        )
    batch_size, channels = features.shape[:2]
    if rois.size(0) == 0:
        return features.new_zeros((0, channels, *output_size))
    rois = rois.detach().to(features.dtype)  # as mmcv's backward: no gradient to the RoIs
    y0, x0, bin_h, bin_w, grid_h, grid_w = _roi_geometry(
        rois, output_size, spatial_scale, sampling_ratio, aligned
    )
    batch = rois[:, 0].long()
    if bool((batch < 0).any() or (batch >= batch_size).any()):
        raise ValueError(
            f"roi_align got a RoI batch index outside [0, {batch_size}) for features of batch {batch_size}."
        )
    return _pool_rois(features, (batch, y0, x0, bin_h, bin_w, grid_h, grid_w), output_size)


def map_roi_levels(rois: Tensor, num_levels: int, finest_scale: float = 56) -> Tensor:
    """FPN level of each RoI by its scale, as mmdet's ``SingleRoIExtractor.map_roi_levels``: ``(K, 5) -> (K,)``.

    Level ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to ``[0, num_levels - 1]``: scales below
    ``2 * finest_scale`` go to level 0, below ``4 * finest_scale`` to level 1, and so on.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def multi_level_roi_align(
    features: list[Tensor],
    rois: Tensor,
    output_size: tuple[int, int],
    strides: list[int],
    finest_scale: float = 56,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """RoI features pooled from each RoI's FPN level, as mmdet's ``SingleRoIExtractor.forward``: ``-> (K, C, oh, ow)``.

    ``features[i]`` is ``(B, C, H_i, W_i)`` at stride ``strides[i]``; each RoI ``(K, 5)`` is pooled by ``roi_align``
    from the level ``map_roi_levels`` gives it (with one level, every RoI is pooled from it).
    """
    if len(features) != len(strides) or not features:
        raise ValueError(
            f"multi_level_roi_align needs one stride per feature level, got {len(features)} levels and {len(strides)} strides."
        )
    first = features[0]
    out = first.new_zeros((rois.size(0), first.size(1), *output_size))
    if rois.size(0) == 0:
        return out
    levels = (
        map_roi_levels(rois, len(features), finest_scale)
        if len(features) > 1
        else torch.zeros_like(rois[:, 0]).long()
    )
    for level, (feature, stride) in enumerate(zip(features, strides)):
        members = (levels == level).nonzero().squeeze(1)
        if members.numel() > 0:
            out[members] = roi_align(
                feature, rois[members], output_size, 1.0 / stride, sampling_ratio, aligned
            )
    return out

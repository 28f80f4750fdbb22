"""RoIAlign (mmcv 2.x's ``RoIAlign``, average pooling) and mmdetection's single-level RoI extractor over FPN levels.

Vectorised over RoIs: the RoIs are grouped by image and adaptive sampling grid (``ceil(roi_size / output_size)`` per
axis when ``sampling_ratio`` is 0); each group's sampling points go through one ``grid_sample`` call (bilinear,
border padding, which is mmcv's clamping rule) and the points mmcv drops (beyond one pixel outside the map) are
masked before the average. The only difference from mmcv is float rounding of the normalised coordinates.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["map_roi_levels", "multi_level_roi_align", "roi_align"]

_CHUNK_ELEMENTS = 1 << 24  # sampled floats per grid_sample call (64 MiB)


def _axis_samples(
    start: Tensor, bin_size: Tensor, grid: int, pooled: int, size: int
) -> tuple[Tensor, Tensor]:
    """Sampling coordinates along one axis, as mmcv's kernel, in ``grid_sample``'s normalised form, and validity.

    ``start``, ``bin_size``: ``(K,)``; returns ``(K, pooled * grid)`` each. A coordinate below -1 or above ``size``
    samples nothing (validity 0); the others are clamped to ``[0, size - 1]`` by ``grid_sample``'s border padding,
    which is mmcv's rule for ``[-1, 0]`` and ``[size - 1, size]``.
    """
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)
    i = torch.arange(grid, device=start.device, dtype=start.dtype)
    coord = (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i + 0.5) * bin_size[:, None, None] / grid
    )
    coord = coord.reshape(start.size(0), pooled * grid)  # (K, pooled*grid)
    valid = ((coord >= -1.0) & (coord <= size)).to(coord.dtype)
    normalised = coord * (2.0 / (size - 1)) - 1.0 if size > 1 else torch.zeros_like(coord)
    return normalised, valid


def _pool_group(feature: Tensor, geometry: tuple[Tensor, ...], out: tuple[int, int, int, int]) -> Tensor:
    """Average of the bilinear samples of RoIs of one image sharing a sampling grid: ``-> (K, C, oh, ow)``.

    ``feature`` is ``(1, C, H, W)``; ``geometry`` holds ``(y0, x0, bin_h, bin_w)`` each ``(K,)``; ``out`` is
    ``(oh, ow, grid_h, grid_w)``. Each RoI's ``(oh*gh, ow*gw)`` sampling grid is stacked along the height.
    """
    _, channels, height, width = feature.shape
    oh, ow, gh, gw = out
    y0, x0, bin_h, bin_w = geometry
    gy, valid_y = _axis_samples(y0, bin_h, gh, oh, height)  # (K, oh*gh)
    gx, valid_x = _axis_samples(x0, bin_w, gw, ow, width)  # (K, ow*gw)
    k = y0.size(0)
    grid = torch.stack(
        torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1
    )  # (K, oh*gh, ow*gw, 2)
    samples = F.grid_sample(
        feature,
        grid.reshape(1, k * oh * gh, ow * gw, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )  # (1, C, K*oh*gh, ow*gw)
    if not (bool(valid_y.all()) and bool(valid_x.all())):
        samples = samples * (valid_y[:, :, None] * valid_x[:, None, :]).reshape(1, 1, k * oh * gh, ow * gw)
    pooled = F.avg_pool2d(samples, kernel_size=(gh, gw), stride=(gh, gw))  # (1, C, K*oh, ow)
    return pooled.view(channels, k, oh, ow).transpose(0, 1)  # (K, C, oh, ow)


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


def _pool_rois(
    features: Tensor,
    batch: Tensor,
    geometry: tuple[Tensor, ...],
    grids: tuple[Tensor, Tensor],
    size: tuple[int, int],
) -> Tensor:
    """Pool every RoI ``-> (K, C, oh, ow)``, one ``_pool_group`` call per (image, sampling grid) and memory chunk."""
    oh, ow = size
    channels = features.size(1)
    out = features.new_zeros((batch.size(0), channels, oh, ow))
    grid_h, grid_w = grids
    if int((grid_h * grid_w).sum()) * oh * ow * channels >= features.numel():
        # grid_sample reads channels-last features several times faster; worth the copy for many samples
        features = features.contiguous(memory_format=torch.channels_last)
    for b, gh, gw in torch.unique(torch.stack([batch, grid_h, grid_w], dim=1), dim=0).tolist():
        if gh == 0 or gw == 0:
            continue
        members = ((batch == b) & (grid_h == gh) & (grid_w == gw)).nonzero().squeeze(1)
        chunk = max(1, _CHUNK_ELEMENTS // (oh * gh * ow * gw * channels))
        for part in members.split(chunk):
            out[part] = _pool_group(features[b : b + 1], tuple(g[part] for g in geometry), (oh, ow, gh, gw))
    return out


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
    rois = rois.to(features.dtype)
    y0, x0, bin_h, bin_w, grid_h, grid_w = _roi_geometry(
        rois, output_size, spatial_scale, sampling_ratio, aligned
    )
    batch = rois[:, 0].long()
    if bool((batch < 0).any() or (batch >= batch_size).any()):
        raise ValueError(
            f"roi_align got a RoI batch index outside [0, {batch_size}) for features of batch {batch_size}."
        )
    return _pool_rois(features, batch, (y0, x0, bin_h, bin_w), (grid_h, grid_w), output_size)


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

"""Mask R-CNN + FPN + Swin: mmdetection 3.3's numbers (config, FPN, RPN post-processing, RoI heads, test
pipeline), empty-result paths, batches of different-size images, presets and parameter counts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swinkit.models.detection.config import (
    DETECTION_PRESETS,
    MaskRCNNConfig,
    get_detection_preset,
    swin_backbone_config,
)
from swinkit.models.detection.fpn import FPN
from swinkit.models.detection.preprocess import DetectionPreprocessor, rescale_size
from swinkit.models.detection.structures import ImageMeta

# ---------------------------------------------------------------- config and presets


def test_presets_follow_the_mmdet_table():
    t1x = get_detection_preset("mask_rcnn_swin_t_1x_coco")
    assert (t1x.box_ap, t1x.mask_ap) == (42.7, 39.3)
    assert t1x.checkpoint_url.endswith("mask_rcnn_swin-t-p4-w7_fpn_1x_coco_20210902_120937-9d6b7cfa.pth")
    assert t1x.mmdet_config == "mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"
    small = get_detection_preset("mask_rcnn_swin_s_amp_ms_crop_3x_coco")
    assert small.config.backbone.depths == (2, 2, 18, 2) and (small.box_ap, small.mask_ap) == (48.2, 43.2)
    config = t1x.config
    assert config.backbone.drop_path_rate == 0.2 and config.backbone.window_size == 7
    assert config.labels[0] == "person" and config.labels[-1] == "toothbrush" and config.num_classes == 80
    assert not get_detection_preset("faster_rcnn_swin_t_1x_coco").config.with_mask


def test_unknown_preset_names_close_matches():
    with pytest.raises(ValueError, match="mask_rcnn_swin_t_1x_coco"):
        get_detection_preset("mask_rcnn_swin_t_1x")


def test_config_round_trips_through_a_dict_and_validates():
    config = get_detection_preset("mask_rcnn_swin_micro").config
    assert MaskRCNNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="3 labels given for 80 classes"):
        config.replace(labels=("a", "b", "c"), num_classes=80)
    with pytest.raises(ValueError, match="4 anchor strides given for 5 FPN levels"):
        config.replace(anchor_strides=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="Swin v2"):
        MaskRCNNConfig(backbone=swin_backbone_config("t").replace(version=2))
    assert config.replace(labels=("a", "b")).num_classes == 2


# ---------------------------------------------------------------- FPN


def _fpn_reference(fpn: FPN, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """mmdet's FPN.forward written out level by level (laterals, cumulative top-down, output convs, pool)."""
    lat = [fpn.lateral_convs[i].conv(x) for i, x in enumerate(features)]
    p3 = lat[3]
    p2 = lat[2] + F.interpolate(p3, size=lat[2].shape[2:], mode="nearest")
    p1 = lat[1] + F.interpolate(p2, size=lat[1].shape[2:], mode="nearest")
    p0 = lat[0] + F.interpolate(p1, size=lat[0].shape[2:], mode="nearest")
    outs = [fpn.fpn_convs[i].conv(p) for i, p in enumerate((p0, p1, p2, p3))]
    return outs + [outs[-1][:, :, ::2, ::2]]  # max_pool2d(kernel 1, stride 2) keeps every other sample


@pytest.mark.parametrize("size", [(64, 96), (50, 77)])
def test_fpn_matches_the_mmdet_forward(size):
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32, 64], 16, 5)
    fpn.init_weights()
    h, w = size
    shapes = [(h, w)]
    for _ in range(3):
        shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))  # Swin's padded merging
    features = [torch.randn(2, c, *s) for c, s in zip([8, 16, 32, 64], shapes)]
    outs = fpn(features)
    expected = _fpn_reference(fpn, features)
    assert [tuple(o.shape[2:]) for o in outs] == [tuple(e.shape[2:]) for e in expected]
    for got, want in zip(outs, expected):
        torch.testing.assert_close(got, want)
    assert outs[4].shape[2:] == ((shapes[3][0] + 1) // 2, (shapes[3][1] + 1) // 2)


def test_fpn_init_is_xavier_uniform_with_zero_bias():
    torch.manual_seed(0)
    fpn = FPN([96, 192, 384, 768], 256, 5)
    fpn.init_weights()
    conv = fpn.lateral_convs[3].conv
    bound = (6 / (768 + 256)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0


# ---------------------------------------------------------------- preprocessing


# (H0, W0) -> (H, W) after mmcv.imrescale(scale=(1333, 800)), worked out by hand from mmcv's rescale_size:
# factor = min(1333 / long, 800 / short), new = int(old * factor + 0.5)
RESIZES = [
    ((480, 640), (800, 1067)),
    ((427, 640), (800, 1199)),
    ((517, 731), (800, 1131)),
    ((1000, 200), (1333, 267)),
    ((800, 1333), (800, 1333)),
    ((100, 2000), (67, 1333)),
]


@pytest.mark.parametrize("original, resized", RESIZES)
def test_resize_follows_mmcv_imrescale(original, resized):
    h0, w0 = original
    assert rescale_size(w0, h0, (1333, 800))[::-1] == resized
    image = np.random.default_rng(0).integers(0, 256, (h0, w0, 3), dtype=np.uint8)
    out, meta = DetectionPreprocessor().resize(image)
    assert out.shape == (*resized, 3) and out.dtype == np.uint8
    assert meta == ImageMeta(original, resized, (resized[1] / w0, resized[0] / h0))


def test_batch_is_normalised_and_zero_padded_to_32():
    mean = np.array([123.675, 116.28, 103.53])
    flat = np.broadcast_to(np.round(mean).astype(np.uint8), (480, 640, 3)).copy()
    bright = np.full((300, 200, 3), 255, dtype=np.uint8)
    batch = DetectionPreprocessor()([flat, bright])
    assert batch.pixel_values.shape == (2, 3, 1216, 1088)  # (800, 1067) and (1200, 800) padded up
    assert [m.img_shape for m in batch.image_metas] == [(800, 1067), (1200, 800)]
    std = torch.tensor([58.395, 57.12, 57.375])
    expected = (torch.tensor(np.round(mean)) - torch.tensor(mean)).float() / std
    torch.testing.assert_close(batch.pixel_values[0, :, 400, 500], expected)
    torch.testing.assert_close(batch.pixel_values[1, :, 100, 100], (255 - torch.tensor(mean).float()) / std)
    assert torch.count_nonzero(batch.pixel_values[0, :, 800:]) == 0
    assert torch.count_nonzero(batch.pixel_values[0, :, :, 1067:]) == 0


def test_preprocessor_refuses_what_is_not_an_rgb_image():
    with pytest.raises(TypeError, match=r"\(H, W, 3\) uint8 RGB arrays, got \(4, 4\)"):
        DetectionPreprocessor()([np.zeros((4, 4), dtype=np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        DetectionPreprocessor()([])


def test_preprocessor_config_round_trips():
    pre = DetectionPreprocessor.from_config(DETECTION_PRESETS["mask_rcnn_swin_t_1x_coco"].config)
    again = DetectionPreprocessor.from_preprocessor_config(pre.to_preprocessor_config())
    assert again.to_preprocessor_config() == pre.to_preprocessor_config()

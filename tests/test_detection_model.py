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


# ---------------------------------------------------------------- the detector (needs swinkit.ops)

from swinkit.models.detection.mask_rcnn import build_mask_rcnn, create_mask_rcnn  # noqa: E402
from swinkit.models.detection.rpn import proposals_single  # noqa: E402


def _micro(seed: int = 0, **overrides):
    """The micro Mask R-CNN with confident heads: spread RPN scores, some classes above 0.05."""
    torch.manual_seed(seed)
    model = create_mask_rcnn("mask_rcnn_swin_micro", **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.rpn_head.rpn_cls.weight.normal_(0, 0.5, generator=generator)
        model.rpn_head.rpn_reg.weight.normal_(0, 0.05, generator=generator)
        cls = model.roi_head.bbox_head.fc_cls
        cls.weight.normal_(0, 0.5, generator=generator)
        cls.bias[:-1].normal_(0, 1, generator=generator)
    return model.eval()


def _anchor(x: int, y: int, stride: int, ratio: float, scale: float) -> list[float]:
    """mmdet's AnchorGenerator anchor (center offset 0) at location (x, y), written out."""
    h_ratio = ratio**0.5
    w, h = stride * scale / h_ratio, stride * scale * h_ratio
    cx, cy = x * stride, y * stride
    return [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]


def _decode(anchor: list[float], delta: list[float], img_shape) -> list[float]:
    """DeltaXYWHBBoxCoder.decode (means 0, stds 1, wh_ratio_clip 16/1000, clipped) for one box."""
    import math

    px, py = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    limit = abs(math.log(16 / 1000))
    dw, dh = (min(max(d, -limit), limit) for d in delta[2:])
    gx, gy, gw, gh = px + pw * delta[0], py + ph * delta[1], pw * math.exp(dw), ph * math.exp(dh)
    h, w = img_shape
    box = [gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2]
    return [min(max(v, 0), w if i % 2 == 0 else h) for i, v in enumerate(box)]


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _slow_proposals(scores, deltas, config, img_shape):
    """RPN test-time post-processing with loops: per level top-k, decode, size filter, greedy NMS per level,
    all survivors by descending score, the first max_per_img."""
    kept = []
    for level, (logit, delta) in enumerate(zip(scores, deltas)):
        stride = config.anchor_strides[level]
        cands = []
        for y in range(logit.shape[1]):
            for x in range(logit.shape[2]):
                for a, ratio in enumerate(config.anchor_ratios):
                    score = 1 / (1 + np.exp(-float(logit[a, y, x])))
                    d = [float(delta[4 * a + k, y, x]) for k in range(4)]
                    cands.append((score, _anchor(x, y, stride, ratio, config.anchor_scales[0]), d))
        cands = sorted(cands, key=lambda c: -c[0])[: config.rpn_nms_pre]
        boxes = [(s, _decode(anc, d, img_shape)) for s, anc, d in cands]
        size = config.rpn_min_bbox_size
        boxes = [(s, b) for s, b in boxes if b[2] - b[0] > size and b[3] - b[1] > size]
        survivors = []
        for s, b in boxes:  # already by descending score
            if all(_iou(b, o) <= config.rpn_iou_threshold for _, o in survivors):
                survivors.append((s, b))
        kept += survivors
    kept = sorted(kept, key=lambda c: -c[0])[: config.rpn_max_per_img]
    return torch.tensor([[*b, s] for s, b in kept], dtype=torch.float32).view(-1, 5)


def test_rpn_proposals_match_a_loop_reference():
    config = get_detection_preset("mask_rcnn_swin_micro").config.replace(
        rpn_nms_pre=25, rpn_max_per_img=30, rpn_min_bbox_size=6.0, rpn_iou_threshold=0.5
    )
    generator = torch.Generator().manual_seed(0)
    sizes = [(6, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    scores = [torch.randn(3, h, w, generator=generator) for h, w in sizes]
    deltas = [0.5 * torch.randn(12, h, w, generator=generator) for h, w in sizes]
    model = build_mask_rcnn(config)
    anchors = model.rpn_head.anchors([s[None] for s in scores])
    img_shape = (21, 26)
    got = proposals_single(scores, deltas, anchors, img_shape, config)
    expected = _slow_proposals(scores, deltas, config, img_shape)
    assert got.shape == expected.shape and 0 < got.shape[0] <= 30
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_no_proposals_gives_empty_detections_of_the_right_shapes():
    model = _micro(rpn_min_bbox_size=1e6)  # every proposal filtered out
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 96), [ImageMeta((30, 45), (64, 90), (2.0, 64 / 30))])
    (det,) = output.detections
    assert output.proposals[0].shape == (0, 5)
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,) and det.labels.dtype == torch.int64
    assert det.masks.shape == (0, 30, 45) and det.masks.dtype == torch.bool


def test_no_detection_above_the_threshold_gives_empty_results():
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro").eval()  # fresh heads: every class near 1/81 < 0.05
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 64), [ImageMeta.identity(64, 64), ImageMeta.identity(50, 60)])
    assert output.proposals[0].shape[0] > 0
    for det, shape in zip(output.detections, [(64, 64), (50, 60)]):
        assert det.boxes.shape == (0, 4) and det.masks.shape == (0, *shape)


def test_detections_are_in_original_pixels_with_masks_pasted_there():
    model = _micro()
    meta = ImageMeta((40, 50), (96, 120), (120 / 50, 96 / 40))
    with torch.no_grad():
        output = model(torch.randn(1, 3, 96, 128), [meta])
    (det,) = output.detections
    assert 0 < len(det) <= 100
    assert float(det.boxes[:, 0::2].max()) <= 50 and float(det.boxes[:, 1::2].max()) <= 40
    assert det.masks.shape == (len(det), 40, 50) and bool(det.masks.any())
    assert bool((det.scores[:-1] >= det.scores[1:]).all()) and bool((det.scores > 0.05).all())
    assert int(det.labels.max()) < 80


def test_faster_rcnn_variant_has_no_masks():
    torch.manual_seed(0)
    model = create_mask_rcnn("faster_rcnn_swin_micro").eval()
    assert model.roi_head.mask_head is None
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 64), [ImageMeta.identity(64, 64)])
    assert output.detections[0].masks is None


def test_a_batch_of_two_sizes_gives_each_images_own_results():
    """Two images of different sizes (different resized shapes and scale factors, the same padded shape) give
    in one batch what each gives alone. Images padded to a larger batch than alone differ slightly, as in
    mmdetection: Swin's windows see the padding."""
    model = _micro(rpn_nms_pre=100, rpn_max_per_img=100, max_per_img=20)
    pre = DetectionPreprocessor(scale=(160, 96))
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (60, 90, 3), dtype=np.uint8),
        rng.integers(0, 256, (59, 91, 3), dtype=np.uint8),
    ]
    batch = pre(images)
    singles = [pre([image]) for image in images]
    assert [m.img_shape for m in batch.image_metas] == [(96, 144), (96, 148)]
    assert all(single.pixel_values.shape[2:] == batch.pixel_values.shape[2:] for single in singles)
    with torch.no_grad():
        together = model(batch.pixel_values, batch.image_metas).detections
        alone = [model(single.pixel_values, single.image_metas).detections[0] for single in singles]
    for a, b, image in zip(together, alone, images):
        assert len(a) == len(b) > 0 and a.masks.shape[1:] == image.shape[:2]
        torch.testing.assert_close(a.boxes, b.boxes, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)
        assert torch.equal(a.labels, b.labels)
        assert (a.masks != b.masks).float().mean() < 1e-3


def test_batch_and_metas_must_agree():
    model = _micro()
    with pytest.raises(ValueError, match="1 image metas given for a batch of 2 images"):
        model(torch.zeros(2, 3, 64, 64), [ImageMeta.identity(64, 64)])
    with pytest.raises(ValueError, match=r"img_shape \(80, 64\), larger than the 64x64 batch"):
        model(torch.zeros(1, 3, 64, 64), [ImageMeta.identity(80, 64)])


def test_models_lists_the_detection_presets(capsys):
    import json

    from swinkit.cli import main

    assert main(["models", "--json", "mask_rcnn_swin_t_1x"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "mask_rcnn_swin_t_1x_coco" and round(row["params"] / 1e6, 1) == 47.8
    assert row["image_size"] == "800x1333" and row["num_classes"] == 80 and row["box_ap"] == 42.7
    assert 200 < row["gflops"] < 330


def test_flops_at_1280x800_match_the_official_swin_detection_table():
    """Swin-Transformer-Object-Detection's README: Mask R-CNN Swin-T 267G, Swin-S 359G FLOPs at 1280x800."""
    from swinkit.models.detection.mask_rcnn import mask_rcnn_flops

    tiny = get_detection_preset("mask_rcnn_swin_t_1x_coco").config
    small = get_detection_preset("mask_rcnn_swin_s_amp_ms_crop_3x_coco").config
    assert round(mask_rcnn_flops(tiny, (800, 1280)) / 1e9) == 267
    assert round(mask_rcnn_flops(small, (800, 1280)) / 1e9) == 359


def test_anchors_are_computed_once_per_size_and_stay_bounded():
    model = build_mask_rcnn(get_detection_preset("mask_rcnn_swin_micro").config)
    first = model.rpn_head.anchors(
        [torch.zeros(1, 8, 4, 6), torch.zeros(1, 8, 2, 3)] + [torch.zeros(1, 8, 1, 2)] * 3
    )
    again = model.rpn_head.anchors(
        [torch.zeros(1, 8, 4, 6), torch.zeros(1, 8, 2, 3)] + [torch.zeros(1, 8, 1, 2)] * 3
    )
    assert first[0] is again[0] and first[0].shape == (4 * 6 * 3, 4)
    with torch.inference_mode():
        served = model.rpn_head.anchors([torch.zeros(1, 8, 3, 3)] * 5)
    assert not served[0].is_inference()  # usable in a later training step
    for width in range(1, 12):
        model.rpn_head.anchors([torch.zeros(1, 8, 1, width)] * 5)
    assert len(model.rpn_head._anchor_cache) == 8


def test_an_image_without_proposals_beside_one_with_detections():
    model = _micro(rpn_min_bbox_size=2.0)  # the 1x1 image's proposals are clipped to at most 1x1: all dropped
    metas = [ImageMeta.identity(64, 64), ImageMeta((1, 1), (1, 1), (1.0, 1.0))]
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 64), metas)
    assert output.proposals[0].shape[0] > 0 and output.proposals[1].shape == (0, 5)
    full, empty = output.detections
    assert len(full) > 0 and full.masks.shape == (len(full), 64, 64)
    assert empty.boxes.shape == (0, 4) and empty.masks.shape == (0, 1, 1)

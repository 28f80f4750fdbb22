"""Semantic segmentation data: mmcv's resize rule, the three layouts, their errors, and the train pipeline."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_scenes import CLASSES, write_ade20k, write_pairs

from swinkit.data import segmentation as seg
from swinkit.data import segmentation_transforms as sdt
from swinkit.data.datasets import sample_rng


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((683, 512), (2048, 512), (683, 512)),  # already inside the scale
        ((2000, 100), (2048, 512), (2048, 102)),  # long edge bound: factor 1.024
        ((333, 250), (2048, 512), (682, 512)),  # 333 * 2.048 = 681.98 rounds to 682 (int(x + 0.5))
        ((100, 2000), (512, 2048), (102, 2048)),  # scale order does not matter: (long, short) bounds
        ((640, 480), (128, 64), (85, 64)),  # 640 * 64 / 480 = 85.33
    ],
)
def test_rescale_size_is_mmcv_rule(size, scale, expected):
    assert seg.rescale_size(*size, scale) == expected


def test_resize_image_is_cv2_bilinear_and_labels_nearest():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = seg.resize_image(image, (3, 2))
    assert out.shape == (2, 3, 3)
    # cv2 INTER_LINEAR at scale 1/2 averages each 2x2 block (pixel centres at 0.5, 1.5)
    assert abs(int(out[0, 0, 0]) - image[:2, :2, 0].mean()) <= 0.5
    labels = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert set(np.unique(seg.resize_labels(labels, (5, 5)))) == {1, 2, 3, 4}


def test_reduce_zero_label_as_mmseg():
    labels = np.array([[0, 1, 2], [150, 255, 3]], dtype=np.uint8)
    assert seg.reduce_zero_label(labels).tolist() == [[255, 0, 1], [149, 255, 2]]


def test_three_layouts_read_the_same_pairs(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", 3)
    ade = write_ade20k(tmp_path / "ade", 2, 1)
    lines = [
        json.dumps({"image_url": f"images/scene{i:04d}.png", "mask_url": f"masks/scene{i:04d}.png"})
        for i in range(3)
    ]
    (pairs / "set.jsonl").write_text("\n".join(lines) + "\n")
    folder = seg.load_segmentation(pairs, CLASSES)
    listed = seg.load_segmentation(pairs / "set.jsonl", CLASSES)
    assert folder.images == listed.images and folder.masks == listed.masks and not folder.reduce_zero_label
    image, labels = folder.read(1)
    assert image.shape == (64, 64, 3) and labels.shape == (64, 64)
    assert labels.tolist() == np.asarray(Image.open(pairs / "masks" / "scene0001.png")).tolist()
    assert seg.read_classes(pairs) == CLASSES
    train = seg.load_segmentation(ade, seg.read_classes(ade))
    val = seg.load_segmentation(ade, seg.read_classes(ade), split="validation")
    assert (len(train), len(val), train.reduce_zero_label) == (2, 1, True)
    raw = np.asarray(Image.open(train.masks[0])).astype(np.int64)
    _, reduced = train.read(0)
    assert ((raw == 0) == (reduced == 255)).all() and (reduced[raw > 0] == raw[raw > 0] - 1).all()


def _break(root, name, array):
    Image.fromarray(array).save(root / "masks" / name)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "masks" / "scene0001.png").unlink(), r"no mask for .*scene0001\.png"),
        (
            lambda root: _break(root, "scene0000.png", np.zeros((40, 64), np.uint8)),
            r"scene0000\.png: the mask is 64x40 pixels but its image .* is 64x64",
        ),
        (
            lambda root: _break(root, "scene0000.png", np.full((64, 64), 7, np.uint8)),
            r"scene0000\.png holds label 7, outside the 4 classes \(0\.\.3, 255 ignored\)",
        ),
        (
            lambda root: _break(root, "scene0000.png", np.zeros((64, 64, 3), np.uint8)),
            r"scene0000\.png: a mask must be a single-channel integer image .* mode RGB",
        ),
    ],
)
def test_data_errors_name_the_file(tmp_path, damage, message):
    root = write_pairs(tmp_path, 2)
    damage(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        seg.load_segmentation(root, CLASSES).read(0)


def test_mask_of_ignore_only_is_valid(tmp_path):
    root = write_pairs(tmp_path, 1)
    _break(root, "scene0000.png", np.full((64, 64), 255, np.uint8))
    assert (seg.load_segmentation(root, CLASSES).read(0)[1] == 255).all()


class _Script:
    """A stand-in generator returning scripted draws and recording each call (name, arguments)."""

    def __init__(self, integers=(), uniform=(), random=()):
        self.queues = {"integers": list(integers), "uniform": list(uniform), "random": list(random)}
        self.calls = []

    def __getattr__(self, name):
        def draw(*args):
            self.calls.append((name, args))
            return self.queues[name].pop(0)

        return draw


def test_random_resize_scales_the_bound_by_the_ratio():
    image, labels = np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.int64)
    # ratio 0.5 + 0.25 * 1.5 = 0.875: scale (112, 56) -> factor min(112/64, 56/48) = 1.1667 -> 75x56
    out, out_labels = sdt.random_resize(image, labels, _Script(random=[0.25]), (128, 64), (0.5, 2.0))
    assert out.shape == (56, 75, 3) and out_labels.shape == (56, 75)


def test_crop_redraws_while_one_class_dominates_ignoring_255():
    labels = np.full((8, 8), 255, np.int64)
    labels[:, 6:] = 1  # columns 6-7 hold class 1, column 5 class 2
    labels[:, 5] = 2
    # a 4x4 crop at left 0 holds only 255 (no class: redraw), at left 4 classes 2 and 1 (4 and 8 pixels:
    # 8/12 = 0.67 < 0.75: kept)
    rng = _Script(integers=[0, 0, 0, 4])
    assert sdt.crop_origin(labels, (4, 4), rng, 0.75) == (0, 4)
    one_class = np.zeros((8, 8), np.int64)
    rng = _Script(integers=list(range(22)))
    assert sdt.crop_origin(one_class, (4, 4), rng, 0.75) == (20, 21)  # the 11th draw is kept
    assert len(rng.calls) == 22


def test_photometric_distortion_order_and_values():
    image = np.full((2, 2, 3), 100, np.uint8)
    # brightness on (+10.7 -> 110), mode 0 (contrast last), saturation off, hue off, contrast on (x1.5)
    rng = _Script(integers=[1, 0, 0, 0, 1], uniform=[10.7, 1.5])
    out = sdt.PhotoMetricDistortion()(image, rng)
    assert (out == 165).all()  # int(110 * 1.5)
    assert [c[0] for c in rng.calls] == [
        "integers",
        "uniform",
        "integers",
        "integers",
        "integers",
        "integers",
        "uniform",
    ]
    hue = np.zeros((1, 1, 3), np.uint8)
    hue[..., 0] = 255  # pure red: hue 0
    rng = _Script(integers=[0, 1, 0, 0, 1, 60])  # mode 1; only the hue, shifted by 60 (of 180): green
    assert sdt.PhotoMetricDistortion()(hue, rng)[0, 0].tolist() == [0, 255, 0]
    assert rng.calls[5] == ("integers", (-18, 18))


def test_train_transform_pads_with_0_and_255_and_is_seeded():
    image = np.full((20, 30, 3), 200, np.uint8)
    labels = np.ones((20, 30), np.int64)
    transform = sdt.SegmentationTrainTransform(
        crop_size=32, scale=(30, 20), ratio_range=(1.0, 1.0), flip=0.0, photometric=False
    )
    pixels, target = transform(image, labels, np.random.default_rng(0))
    assert pixels.shape == (3, 32, 32) and target.shape == (32, 32)
    assert (target[:20, :30] == 1).all() and (target[20:] == 255).all() and (target[:, 30:] == 255).all()
    assert (pixels[:, 20:] == 0).all() and (pixels[:, :, 30:] == 0).all()
    assert torch.allclose(pixels[0, 0, 0], torch.tensor((200 - 123.675) / 58.395))
    full = sdt.SegmentationTrainTransform(crop_size=16, scale=(64, 32))
    first = full(image, labels, sample_rng(0, 1, 5))
    again = full(image, labels, sample_rng(0, 1, 5))
    other = full(image, labels, sample_rng(0, 2, 5))
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])

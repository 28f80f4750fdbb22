"""mmdet's Swin 3x multi-scale + crop train pipeline (``det.train_pipeline: ms_crop``, recipe ``mmdet_3x``)."""

import numpy as np
import pytest
import torch
from instance_scenes import write_scenes

from swinkit.data.instance_augment import (
    Instances,
    MultiScaleCrop,
    absolute_range_crop,
    crop,
    hflip,
    rescale,
    scaled_multi_scale_crop,
)
from swinkit.data.instance_transforms import CollateInstances, InstanceTrainSet
from swinkit.data.instances import load_instances
from swinkit.engine.config import TrainConfig, apply_recipe
from swinkit.models.detection.preprocess import DetectionPreprocessor
from swinkit.tasks.instance_segmentation import multi_scale_crop


def _scene() -> Instances:
    """A 40x60 image with two objects: a box at x 10..30, y 5..25 and one at x 45..58, y 20..38."""
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 30, 25], [45, 20, 58, 38]], dtype=np.float32)
    masks = np.zeros((2, 40, 60), np.uint8)
    masks[0, 5:25, 10:30], masks[1, 20:38, 45:58] = 1, 1
    return Instances(pixels, boxes, np.array([0, 1]), masks)


def test_crop_shifts_clips_and_drops_objects_outside_as_mmdet_random_crop():
    cut = crop(_scene(), top=10, left=20, height=20, width=30)  # the window x 20..50, y 10..30
    assert cut.shape == (20, 30) and cut.masks.shape == (2, 20, 30)
    assert cut.boxes.tolist() == [[0, 0, 10, 15], [25, 10, 30, 20]]
    assert cut.labels.tolist() == [0, 1] and np.array_equal(cut.pixels, _scene().pixels[10:30, 20:50])
    assert np.array_equal(cut.masks[1], _scene().masks[1, 10:30, 20:50])
    left = crop(_scene(), top=0, left=0, height=40, width=35)  # the second object is outside: dropped
    assert left.labels.tolist() == [0] and left.masks.shape == (1, 40, 35)
    empty = crop(_scene(), top=28, left=0, height=12, width=40)  # allow_negative_crop: no object kept
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,) and empty.masks.shape == (0, 12, 40)


def test_rescale_keeps_the_ratio_scales_boxes_and_resizes_masks_nearest():
    out, factor = rescale(_scene(), (1333, 20))  # short side 40 -> 20: 30x20
    assert out.shape == (20, 30) and factor == (0.5, 0.5) and out.masks.shape == (2, 20, 30)
    assert out.boxes.tolist() == [[5, 2.5, 15, 12.5], [22.5, 10, 29, 19]]
    assert set(np.unique(out.masks)) <= {0, 1}
    long_bound, _ = rescale(_scene(), (45, 40))  # mmcv's (long, short) bound: the long side 60 -> 45 rules
    assert long_bound.shape == (30, 45)
    flipped = hflip(_scene())
    assert flipped.boxes[0].tolist() == [30, 5, 50, 25] and np.array_equal(
        flipped.masks, _scene().masks[:, :, ::-1]
    )


def test_the_crop_size_is_drawn_in_the_absolute_range_and_fits_the_image():
    rng = np.random.default_rng(0)
    draws = [absolute_range_crop(rng, (40, 60), (24, 50)) for _ in range(200)]
    assert all(
        24 <= h <= 40 and 24 <= w <= 50 and top + h <= 40 and left + w <= 60 for top, left, h, w in draws
    )
    assert {h for _, _, h, _ in draws} == set(range(24, 41))  # min(h, high) = 40 bounds the height


def test_the_pipeline_at_mmdet_scale_has_mmdet_3x_sides():
    ours = scaled_multi_scale_crop((1333, 800), 0.5)
    assert ours == MultiScaleCrop()
    assert ours.short_sides == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    assert (ours.long_side, ours.crop_short_sides, ours.crop_range) == (1333, (400, 500, 600), (384, 600))
    small = scaled_multi_scale_crop((64, 64), 0.5)
    assert small.short_sides[0] == 38 and small.short_sides[-1] == 64 and small.crop_range == (31, 48)
    with pytest.raises(ValueError, match="crop range"):
        MultiScaleCrop(crop_range=(600, 384))


def test_pipeline_outputs_are_consistent_over_many_draws():
    pipeline = scaled_multi_scale_crop((120, 40), 0.5)  # short sides 24..40, crops 19..30
    scene = _scene()
    small = np.zeros((3, 40, 60), np.uint8)
    small[:2], small[2, 30:36, 2:8] = scene.masks, 1  # and a small object in a corner
    scene = Instances(scene.pixels, np.concatenate([scene.boxes, [[2, 30, 8, 36]]]).astype(np.float32),
                      np.array([0, 1, 0]), small)  # fmt: skip
    sizes, counts = set(), set()
    for seed in range(100):
        out, factor = pipeline(scene, np.random.default_rng(seed))
        h, w = out.shape
        assert out.masks.shape == (len(out.labels), h, w) and out.boxes.shape == (len(out.labels), 4)
        assert min(h, w) in pipeline.short_sides or max(h, w) == pipeline.long_side
        sizes.add(min(h, w))
        counts.add(len(out.labels))
        for box, mask in zip(out.boxes, out.masks):
            ys, xs = mask.nonzero()
            if len(
                xs
            ):  # each mask inside its box, to the 2 pixels two nearest resizes of the mask may move it
                assert xs.min() >= box[0] - 2 and xs.max() <= box[2] + 1
                assert ys.min() >= box[1] - 2 and ys.max() <= box[3] + 1
    assert len(sizes) > 5 and counts == {1, 2, 3}  # many scales; crops that drop objects


def test_ms_crop_option_feeds_the_train_set_and_the_3x_recipe(tmp_path):
    config = apply_recipe(TrainConfig(task="instance_segmentation"), "mmdet_3x")
    s = config.schedule
    assert (s.epochs, s.milestones, s.warmup_iters, config.optim.lr, config.optim.weight_decay) == (
        36, (27, 33), 1000, 1e-4, 0.05,
    )  # fmt: skip
    assert (
        config.task_options.train_pipeline == "ms_crop"
        and multi_scale_crop(config.task_options) == MultiScaleCrop()
    )
    back = apply_recipe(config, "mmdet_1x")
    assert back.task_options.train_pipeline == "resize" and multi_scale_crop(back.task_options) is None
    config.task_options.train_pipeline = "mosaic"
    with pytest.raises(ValueError, match="det.train_pipeline must be one of resize, ms_crop"):
        multi_scale_crop(config.task_options)

    data = load_instances(write_scenes(tmp_path, 3, size=64))
    processor = DetectionPreprocessor((64, 64))
    train = InstanceTrainSet(data, processor, 0.5, 0, scaled_multi_scale_crop((64, 64), 0.5))
    samples = [train[i] for i in range(3)]
    assert all(s["pixels"].shape[1:] == s["masks"].shape[1:] == s["meta"].img_shape for s in samples)
    assert all(s["meta"].ori_shape == (64, 64) for s in samples)
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(samples, [train[i] for i in range(3)]))
    train.set_epoch(1)  # another epoch, other draws
    assert any(a["pixels"].shape != train[i]["pixels"].shape or not torch.equal(a["pixels"], train[i]["pixels"])
               for i, a in enumerate(samples))  # fmt: skip
    batch = CollateInstances(processor)(samples)
    assert batch["pixel_values"].shape[2] % 32 == 0 and len(batch["gt_masks"]) == 3

"""Training augmentation: crops, RandAugment, random erasing, Mixup/CutMix targets."""

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.data.augment import (
    MixupCutmix,
    TrainTransform,
    rand_augment,
    random_erasing,
    random_resized_crop_box,
    soft_targets,
)


def test_random_resized_crop_box_stays_inside_and_respects_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(64, 48, (0.3, 0.6), (0.75, 4 / 3), rng)
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
        area = (right - left) * (bottom - top) / (64 * 48)
        assert 0.25 < area < 0.65


def test_train_transform_is_normalised_and_reproducible():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    transform = TrainTransform(size=24)
    a = transform(image, np.random.default_rng(7))
    b = transform(image, np.random.default_rng(7))
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, transform(image, np.random.default_rng(8)))
    assert -3 < float(a.mean()) < 3


def test_rand_augment_changes_pixels_but_not_size():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    changed = [rand_augment(image, np.random.default_rng(s), ops=2, magnitude=9, prob=1.0) for s in range(10)]
    assert all(c.size == image.size and c.mode == "RGB" for c in changed)
    assert sum(not np.array_equal(np.asarray(c), np.asarray(image)) for c in changed) >= 8


def test_random_erasing_replaces_one_rectangle():
    pixels = torch.zeros(3, 32, 32)
    erased = random_erasing(pixels, np.random.default_rng(0), prob=1.0)
    rows, cols = torch.nonzero(erased.abs().sum(0)).unbind(1)
    assert rows.numel() > 0
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box == rows.numel()  # the changed pixels fill a rectangle
    assert torch.equal(random_erasing(pixels, np.random.default_rng(0), prob=0.0), pixels)


def test_label_smoothing_values():
    soft = soft_targets(torch.tensor([2, 0]), 4, 0.1, multi_label=False)
    assert soft[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    assert soft.sum(1).tolist() == pytest.approx([1.0, 1.0])
    multi = soft_targets(torch.tensor([[1.0, 0.0]]), 2, 0.2, multi_label=True)
    assert multi[0].tolist() == pytest.approx([0.9, 0.1])


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0)])
def test_mixup_and_cutmix_mix_targets_in_proportion_to_pixels(mixup, cutmix):
    pixels = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])  # image 0 black, image 1 white
    mix = MixupCutmix(num_classes=2, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0)
    for seed in range(5):
        mixed, soft = mix(pixels, torch.tensor([0, 1]), np.random.default_rng(seed))
        share_of_other = float(mixed[0].mean())  # image 0 contains this much of image 1
        assert soft[0, 1].item() == pytest.approx(share_of_other, abs=1e-6)
        assert soft.sum(1).tolist() == pytest.approx([1.0, 1.0])


def test_mixing_off_returns_the_batch_with_smoothed_targets():
    pixels = torch.randn(4, 3, 8, 8)
    mix = MixupCutmix(num_classes=3, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0)
    out, soft = mix(pixels, torch.tensor([0, 1, 2, 0]), np.random.default_rng(0))
    assert out is pixels
    assert soft.argmax(1).tolist() == [0, 1, 2, 0]

"""The shared training/evaluation dataset bases (data.datasets.AugmentedSet, ProcessedSet) behind the
classification and segmentation datasets: each sample's generator is fixed by (seed, epoch, index)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from segmentation_scenes import CLASSES, write_pairs

from swinkit.data.datasets import AugmentedSet, EvalImages, ProcessedSet, TrainImages, load_dataset
from swinkit.data.segmentation import SegmentationEvalSet, SegmentationTrainSet, load_segmentation


def _draw(rng: np.random.Generator) -> float:
    return float(rng.random())


def test_a_samples_generator_depends_on_seed_epoch_and_index_only():
    data = AugmentedSet(list(range(4)), transform=None, seed=7)
    first = [_draw(data.rng(i)) for i in range(4)]
    assert first == [_draw(np.random.default_rng([7, 0, i])) for i in range(4)] and len(set(first)) == 4
    data.set_epoch(1)
    assert [_draw(data.rng(i)) for i in range(4)] == [
        _draw(np.random.default_rng([7, 1, i])) for i in range(4)
    ]
    assert len(ProcessedSet(list(range(3)), processor=None)) == 3


def test_classification_and_segmentation_sets_draw_through_the_shared_generators(tmp_path):
    seen = []
    pairs = load_segmentation(write_pairs(tmp_path / "seg", 3), CLASSES)
    train = SegmentationTrainSet(pairs, lambda img, lab, rng: seen.append(_draw(rng)) or (img, lab), seed=5)
    train.set_epoch(2)
    image, labels = train[1]
    assert isinstance(train, AugmentedSet) and seen == [_draw(np.random.default_rng([5, 2, 1]))]
    pixels, truth = SegmentationEvalSet(pairs, lambda im: torch.zeros(3, *im.size[::-1]))[1]
    assert pixels.shape[1:] == truth.shape == image.shape[:2] and np.array_equal(truth.numpy(), labels)

    folder = tmp_path / "cls"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(folder / name / f"{i}.png")
    images = load_dataset(folder)
    seen.clear()
    images_train = TrainImages(
        images, lambda im, rng: seen.append(_draw(rng)) or torch.zeros(3, 8, 8), seed=5
    )
    images_train.set_epoch(2)
    assert images_train[1][1] == images.targets[1][0] and seen == [_draw(np.random.default_rng([5, 2, 1]))]
    assert isinstance(EvalImages(images, lambda im: torch.zeros(3)), ProcessedSet)

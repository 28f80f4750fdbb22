"""Semantic segmentation data: mmcv's resize rule, the three layouts, their errors, and the train pipeline."""

import numpy as np
import pytest

from swinkit.data import segmentation as seg


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

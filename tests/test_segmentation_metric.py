"""mmseg's IoUMetric against a hand-computed confusion matrix, with ignore index and reduce_zero_label."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swinkit.data.segmentation import reduce_zero_label
from swinkit.engine.distributed import DistContext
from swinkit.evaluation.segmentation import (
    areas_to_metrics,
    intersect_and_union,
    plot_class_iou,
    report_text,
)
from swinkit.tasks.semantic_segmentation import SegmentationEvaluator

CLASSES = ("wall", "floor", "sky", "never")  # "never": neither labelled nor predicted


def _examples():
    """Two images. The first has one ignored pixel; the second is an ADE20K-style map read with
    reduce_zero_label (0 -> 255 ignored, k -> k - 1)."""
    label1 = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred1 = torch.tensor([[0, 1, 1], [1, 0, 2]])
    raw2 = np.array([[1, 1], [0, 3]], np.uint8)
    label2 = torch.from_numpy(reduce_zero_label(raw2))  # [[0, 0], [255, 2]]
    pred2 = torch.tensor([[0, 2], [1, 2]])
    return [(pred1, label1), (pred2, label2)]


def test_areas_match_the_confusion_matrix():
    (pred1, label1), (pred2, label2) = _examples()
    # image 1, rows label / columns prediction over the 5 labelled pixels: wall {wall 1, floor 1},
    # floor {floor 2}, sky {wall 1}
    assert intersect_and_union(pred1, label1, 4).tolist() == [
        [1, 2, 0, 0],
        [3, 3, 1, 0],
        [2, 3, 0, 0],
        [2, 2, 1, 0],
    ]
    # image 2: wall {wall 1, sky 1}, sky {sky 1}; the "other" pixel predicted floor counts nowhere
    assert intersect_and_union(pred2, label2, 4).tolist() == [
        [1, 0, 1, 0],
        [2, 0, 2, 0],
        [1, 0, 2, 0],
        [2, 0, 1, 0],
    ]


def test_metrics_accumulate_over_the_dataset_not_per_image():
    evaluator = SegmentationEvaluator(CLASSES, DistContext(device=torch.device("cpu")))
    for pred, label in _examples():
        logits = F.one_hot(pred, 4).permute(2, 0, 1).float() * 10  # (K, H, W) whose argmax is pred
        evaluator.process(([torch.zeros(3, *pred.shape)], [label]), [logits])
    metrics = evaluator.compute()
    # totals: intersection (2, 2, 1, 0), union (5, 3, 3, 0), label (4, 2, 2, 0)
    assert metrics["aAcc"] == pytest.approx(5 / 8)
    assert metrics["mIoU"] == pytest.approx((2 / 5 + 2 / 3 + 1 / 3) / 3)  # per-image means would give 0.4167
    assert metrics["mAcc"] == pytest.approx((2 / 4 + 2 / 2 + 1 / 2) / 3)
    assert metrics["per_class"]["floor"] == {"IoU": pytest.approx(2 / 3), "Acc": pytest.approx(1.0)}
    assert metrics["per_class"]["never"] == {"IoU": None, "Acc": None}
    assert metrics["num_samples"] == 2
    assert "never" in report_text(metrics) and "0.4667" in report_text(metrics)


def test_predicted_but_unlabelled_class_has_iou_zero_and_no_accuracy():
    areas = intersect_and_union(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]), 2)
    metrics = areas_to_metrics(areas)
    assert metrics["IoU"][1] == 0.0 and math.isnan(metrics["Acc"][1])
    assert metrics["mIoU"] == pytest.approx(0.25) and metrics["mAcc"] == pytest.approx(0.5)


def test_class_iou_plot(tmp_path):
    path = plot_class_iou(
        {"a": {"IoU": 0.5, "Acc": 0.7}, "b": {"IoU": None, "Acc": None}}, tmp_path / "iou.png"
    )
    assert path.stat().st_size > 1000

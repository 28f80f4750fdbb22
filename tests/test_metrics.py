"""Metrics agree with scikit-learn's on fixed predictions."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from swinkit.engine.metrics import compute_metrics, samples_iou

LABELS = ("cat", "dog", "car", "bus", "tree", "sky")


def _multiclass_case():
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, len(LABELS), (200,), generator=g)
    logits = torch.randn(200, len(LABELS), generator=g)
    logits[torch.arange(200), targets] += 1.0  # better than chance, not perfect
    logits[:, 5] -= 3.0  # class "sky" is never predicted: zero-division cases
    return torch.softmax(logits, -1), targets


def test_multiclass_metrics_match_sklearn():
    probs, targets = _multiclass_case()
    m = compute_metrics(probs, targets, LABELS, multi_label=False)
    y, pred = targets.numpy(), probs.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, probs.numpy(), k=5))
    for average in ("micro", "macro", "weighted"):
        kw = dict(average=average, zero_division=0)
        assert m[f"precision_{average}"] == pytest.approx(skm.precision_score(y, pred, **kw), abs=1e-6)
        assert m[f"recall_{average}"] == pytest.approx(skm.recall_score(y, pred, **kw), abs=1e-6)
        assert m[f"f1_{average}"] == pytest.approx(skm.f1_score(y, pred, **kw), abs=1e-6)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(len(LABELS))).tolist()
    report = skm.classification_report(y, pred, labels=range(len(LABELS)), output_dict=True, zero_division=0)
    for i, label in enumerate(LABELS):
        assert m["per_class"][label]["f1"] == pytest.approx(report[str(i)]["f1-score"], abs=1e-6)
        assert m["per_class"][label]["support"] == report[str(i)]["support"]


def test_multilabel_metrics_match_sklearn():
    g = torch.Generator().manual_seed(2)
    targets = (torch.rand(300, len(LABELS), generator=g) < 0.35).long()
    targets[0] = 0  # a sample with no labels
    probs = (0.6 * targets + 0.7 * torch.rand(300, len(LABELS), generator=g)).clamp(0, 1)
    m = compute_metrics(probs, targets, LABELS, multi_label=True, threshold=0.5)
    y, scores = targets.numpy(), probs.numpy()
    pred = (scores >= 0.5).astype(int)
    with np.errstate(all="ignore"):
        expected_iou = skm.jaccard_score(y, pred, average="samples", zero_division=0)
    assert m["iou"] == pytest.approx(expected_iou, abs=1e-6)
    assert m["map"] == pytest.approx(skm.average_precision_score(y, scores, average="macro"), abs=1e-5)
    for average in ("micro", "macro"):
        assert m[f"f1_{average}"] == pytest.approx(
            skm.f1_score(y, pred, average=average, zero_division=0), abs=1e-6
        )
        assert m[f"precision_{average}"] == pytest.approx(
            skm.precision_score(y, pred, average=average, zero_division=0), abs=1e-6
        )
    per_label_ap = skm.average_precision_score(y, scores, average=None)
    for i, label in enumerate(LABELS):
        assert m["per_class"][label]["ap"] == pytest.approx(per_label_ap[i], abs=1e-5)


def test_iou_of_perfect_and_disjoint_predictions():
    targets = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert samples_iou(targets.float(), targets) == 1.0
    assert samples_iou(1.0 - targets.float(), targets) == 0.0

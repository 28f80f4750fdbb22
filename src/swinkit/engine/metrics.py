"""Classification metrics (torchmetrics) with the names Azure ML reports.

Multi-class: ``accuracy`` (top-1), ``top5_accuracy``, precision/recall/F1 micro/macro/weighted, a per-class
report and the confusion matrix (rows: true class, columns: predicted). Multi-label: ``iou`` (Jaccard,
averaged over samples at the threshold; a sample with neither true nor predicted labels scores 0, as in
scikit-learn), ``map`` (macro average precision), F1/precision/recall micro/macro and a per-class report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

AVERAGES = ("micro", "macro", "weighted")


def _tmf() -> Any:
    """torchmetrics' classification functions, imported on first use (the package takes seconds to import)."""
    import torchmetrics.functional.classification as tmf

    return tmf


def _per_class(
    labels: Sequence[str], columns: dict[str, torch.Tensor], support: torch.Tensor
) -> dict[str, dict]:
    return {
        label: {**{name: float(values[i]) for name, values in columns.items()}, "support": int(support[i])}
        for i, label in enumerate(labels)
    }


def multiclass_metrics(probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str]) -> dict[str, Any]:
    """probs (N, C) softmax outputs, targets (N,) class indices."""
    tmf = _tmf()
    c = len(labels)
    targets = targets.long()
    out: dict[str, Any] = {
        "accuracy": float(tmf.multiclass_accuracy(probs, targets, c, average="micro")),
        "top5_accuracy": float(tmf.multiclass_accuracy(probs, targets, c, average="micro", top_k=min(5, c))),
    }
    fns = {
        "precision": tmf.multiclass_precision,
        "recall": tmf.multiclass_recall,
        "f1": tmf.multiclass_f1_score,
    }
    for name, fn in fns.items():
        for average in AVERAGES:
            out[f"{name}_{average}"] = float(fn(probs, targets, c, average=average, zero_division=0))
    columns = {name: fn(probs, targets, c, average="none", zero_division=0) for name, fn in fns.items()}
    out["per_class"] = _per_class(labels, columns, torch.bincount(targets, minlength=c))
    out["confusion_matrix"] = tmf.multiclass_confusion_matrix(probs, targets, c).tolist()
    return out


def samples_iou(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean over samples of |predicted ∩ true| / |predicted ∪ true| (0 for a sample where both are empty)."""
    predicted = probs >= threshold
    truth = targets.bool()
    inter = (predicted & truth).sum(1).float()
    union = (predicted | truth).sum(1).float()
    per_sample = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    return float(per_sample.mean())


def multilabel_metrics(
    probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """probs (N, C) sigmoid outputs, targets (N, C) multi-hot."""
    tmf = _tmf()
    c = len(labels)
    targets = targets.long()
    out: dict[str, Any] = {
        "iou": samples_iou(probs, targets, threshold),
        "map": float(tmf.multilabel_average_precision(probs, targets, c, average="macro")),
    }
    fns = {
        "precision": tmf.multilabel_precision,
        "recall": tmf.multilabel_recall,
        "f1": tmf.multilabel_f1_score,
    }
    for name, fn in fns.items():
        for average in ("micro", "macro"):
            out[f"{name}_{average}"] = float(
                fn(probs, targets, c, threshold=threshold, average=average, zero_division=0)
            )
    columns = {
        name: fn(probs, targets, c, threshold=threshold, average="none", zero_division=0)
        for name, fn in fns.items()
    }
    columns["ap"] = tmf.multilabel_average_precision(probs, targets, c, average="none")
    out["per_class"] = _per_class(labels, columns, targets.sum(0))
    return out


def compute_metrics(
    probs: torch.Tensor,
    targets: torch.Tensor,
    labels: Sequence[str],
    multi_label: bool,
    threshold: float = 0.5,
) -> dict[str, Any]:
    if multi_label:
        return multilabel_metrics(probs, targets, labels, threshold)
    return multiclass_metrics(probs, targets, labels)


def pr_curves(
    probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], multi_label: bool
) -> dict[str, tuple[list[float], list[float]]]:
    """Per class (one-vs-rest for multi-class): (precision, recall) points of the precision-recall curve."""
    tmf = _tmf()
    c = len(labels)
    if multi_label:
        precision, recall, _ = tmf.multilabel_precision_recall_curve(probs, targets.long(), c)
    else:
        precision, recall, _ = tmf.multiclass_precision_recall_curve(probs, targets.long(), c)
    return {label: (precision[i].tolist(), recall[i].tolist()) for i, label in enumerate(labels)}


def summary_line(metrics: dict[str, Any], multi_label: bool) -> str:
    """A short human summary of the headline metrics."""
    keys = (
        ("iou", "map", "f1_micro", "f1_macro") if multi_label else ("accuracy", "top5_accuracy", "f1_macro")
    )
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)

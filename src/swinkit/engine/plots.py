"""Training curves, confusion matrix and precision-recall curves as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from swinkit.checkpoint_io import open_output  # noqa: E402


def _save(figure: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with open_output(path, "wb", ".png") as f:
        figure.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_history(history: Sequence[dict[str, Any]], metric: str, path: str | os.PathLike) -> Path:
    """Two panels over epochs: train/validation loss, and the validation ``metric``."""
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [h[metric] for h in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike
) -> Path:
    """Counts with true classes as rows and predicted classes as columns."""
    n = len(labels)
    size = max(4.0, 0.5 * n + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    axis.set_xticklabels(labels, rotation=45, ha="right")
    axis.set_yticklabels(labels)
    if n <= 30:
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if count > peak / 2 else "black"
                axis.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    return _save(figure, path)


def plot_pr_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike
) -> Path:
    """One precision-recall curve per class."""
    figure, axis = plt.subplots(figsize=(6, 5))
    for label, (precision, recall) in curves.items():
        axis.plot(recall, precision, label=label, linewidth=1.2)
    axis.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1.01), ylim=(0, 1.01))
    axis.grid(alpha=0.3)
    if len(curves) <= 20:
        axis.legend(fontsize=7, loc="lower left")
    return _save(figure, path)

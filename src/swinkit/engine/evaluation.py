"""Running a model over an evaluation loader (gathered across ranks) and writing the report: metrics.json
and the plots."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from swinkit.checkpoint_io import atomic_write_json
from swinkit.engine.distributed import DistContext, all_gather_rows, all_reduce_sum
from swinkit.engine.metrics import compute_metrics, pr_curves, primary_metric


@dataclass
class Outputs:
    """Probabilities (N, C), targets ((N,) indices or (N, C) multi-hot) and the mean loss over all ranks."""

    probs: torch.Tensor
    targets: torch.Tensor
    loss: float


def eval_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Summed (not averaged) cross-entropy or binary cross-entropy of a batch."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum") / targets.shape[1]
    return F.cross_entropy(logits, targets.long(), reduction="sum")


@torch.inference_mode()
def predict(
    model: nn.Module, loader: DataLoader, multi_label: bool, context: DistContext, bf16: bool = False
) -> Outputs:
    """Every rank's shard through ``model`` in eval mode; probabilities and targets of all ranks."""
    was_training = model.training
    model.eval()
    probs, targets = [], []
    loss = torch.zeros(2, dtype=torch.float64, device=context.device)  # (summed loss, count)
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for pixels, target in loader:
        pixels, target = pixels.to(context.device), target.to(context.device)
        with autocast:
            logits = model(pixels)
        logits = logits.float()
        loss[0] += eval_loss(logits, target, multi_label).double()
        loss[1] += target.shape[0]
        probs.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1))
        targets.append(target)
    model.train(was_training)
    num_classes = model.config.num_classes if hasattr(model, "config") else 0
    local_probs = torch.cat(probs) if probs else torch.zeros(0, num_classes, device=context.device)
    local_targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=context.device)
    total = all_reduce_sum(loss, context)
    return Outputs(
        all_gather_rows(local_probs, context).cpu(),
        all_gather_rows(local_targets, context).cpu(),
        float(total[0] / total[1].clamp(min=1)),
    )


def write_report(
    directory: str | os.PathLike,
    report: dict[str, Any],
    outputs: Outputs,
    labels: Sequence[str],
    multi_label: bool,
) -> dict[str, Path]:
    """metrics.json (``report``: final metrics at the top level, and the per-epoch ``history`` of a training
    run) and PNG plots (curves over epochs, confusion matrix, precision-recall) in ``directory``."""
    from swinkit.engine import plots  # matplotlib is imported only when plots are drawn

    directory = Path(directory)
    written = {"metrics": directory / "metrics.json"}
    atomic_write_json(written["metrics"], report)
    plot_dir = directory / "plots"
    if report.get("history"):
        metric = primary_metric(multi_label)
        written["curves"] = plots.plot_history(report["history"], metric, plot_dir / "curves.png")
    if "confusion_matrix" in report:
        written["confusion_matrix"] = plots.plot_confusion_matrix(
            report["confusion_matrix"], labels, plot_dir / "confusion_matrix.png"
        )
    curves = pr_curves(outputs.probs, outputs.targets, labels, multi_label)
    written["pr_curves"] = plots.plot_pr_curves(curves, plot_dir / "pr_curves.png")
    return written


def evaluate_outputs(
    outputs: Outputs, labels: Sequence[str], multi_label: bool, threshold: float
) -> dict[str, Any]:
    """The full metric set of ``outputs`` plus the loss and sample count."""
    metrics = compute_metrics(outputs.probs, outputs.targets, labels, multi_label, threshold)
    return {"loss": outputs.loss, "num_samples": int(outputs.probs.shape[0]), **metrics}

"""Evaluating a saved model on a labelled set, with the preprocessing ``swinkit predict`` applies."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from swinkit.data.datasets import EvalImages, load_dataset
from swinkit.engine.distributed import DistContext
from swinkit.engine.evaluation import evaluate_outputs, predict, write_report
from swinkit.engine.metrics import primary_metric
from swinkit.inference import Predictor


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    batch_size: int = 32,
    threshold: float = 0.5,
    num_workers: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Metrics of ``model`` (any source swinkit loads) on ``data``; with ``output``, metrics.json and plots.

    The data's labels must be among the model's; their order is the model's.
    """
    predictor = Predictor.from_pretrained(model, device=device)
    multi_label = predictor.multi_label
    images = load_dataset(data, labels=predictor.labels, multi_label=multi_label)
    loader = DataLoader(
        EvalImages(images, predictor.processor), batch_size=batch_size, num_workers=num_workers
    )
    outputs = predict(predictor.model, loader, multi_label, DistContext(device=torch.device(device)))
    report = {
        "primary_metric": primary_metric(multi_label),
        "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
        **evaluate_outputs(outputs, predictor.labels, multi_label, threshold),
    }
    if output is not None:
        write_report(output, report, outputs, predictor.labels, multi_label)
    return report

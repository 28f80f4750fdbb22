"""Evaluating a saved model on a labelled set, with the preprocessing ``swinkit predict`` applies."""

from __future__ import annotations

import os
from typing import Any

import torch

from swinkit.data.datasets import load_dataset
from swinkit.engine.config import TrainConfig
from swinkit.engine.distributed import DistContext
from swinkit.engine.evaluation import run_evaluation
from swinkit.layouts.hf import config_to_hf
from swinkit.tasks import task_of_saved_model


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
    from swinkit.inference import Predictor

    predictor = Predictor.from_pretrained(model, device=device)
    task_class = task_of_saved_model(config_to_hf(predictor.model.config))
    config = TrainConfig()
    config.run.threshold, config.data.num_workers = threshold, num_workers
    task = task_class(config, labels=predictor.labels, multi_label=predictor.multi_label)
    images = load_dataset(data, labels=predictor.labels, multi_label=task.multi_label)
    context = DistContext(device=torch.device(device))
    loader = task.eval_loader(images, predictor.processor, batch_size, context)
    evaluator = task.evaluator(context)
    metrics = run_evaluation(predictor.model, loader, task, evaluator, context)
    report = {"primary_metric": task.primary_metric, **task.report_fields(predictor.model), **metrics}
    if output is not None:
        task.write_report(output, report, evaluator)
    return report

"""Evaluating a saved model on a labelled set, with the preprocessing ``swinkit predict`` applies."""

from __future__ import annotations

import os
from typing import Any


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    batch_size: int = 32,
    threshold: float = 0.5,
    num_workers: int = 0,
    device: str = "cpu",
    **options: Any,
) -> dict[str, Any]:
    """Metrics of ``model`` (any source swinkit loads) on ``data``; with ``output``, metrics.json and plots.

    The data's labels must be among the model's; their order is the model's. ``options`` are the task's own
    evaluation options (semantic segmentation: ``mode``, ``tta``); one the task does not take is refused.
    """
    from swinkit.inference import check_task_options, task_of_source

    task = task_of_source(model)
    check_task_options(task.evaluate_saved, options, task, "an evaluation")
    return task.evaluate_saved(
        model,
        data,
        output=output,
        batch_size=batch_size,
        threshold=threshold,
        num_workers=num_workers,
        device=device,
        **options,
    )

"""Running a model over an evaluation loader into a task's evaluator (detectron2's ``inference_on_dataset``)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from swinkit.engine.distributed import DistContext
from swinkit.tasks.base import Evaluator, Task, to_device


@torch.inference_mode()
def run_evaluation(
    model: nn.Module,
    loader: DataLoader,
    task: Task,
    evaluator: Evaluator,
    context: DistContext,
    bf16: bool = False,
) -> dict[str, Any]:
    """Every rank's shard through ``model`` in eval mode into ``evaluator``; its metrics over all ranks."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for batch in loader:
        batch = to_device(batch, context.device)
        with autocast:
            outputs = task.infer(model, batch)
        evaluator.process(batch, outputs)
    model.train(was_training)
    return evaluator.compute()

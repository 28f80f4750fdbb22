"""The task interface: what a task (classification, masked image modeling, ...) provides to the trainer
and to inference.

The trainer holds one ``Task`` and calls only the methods below; it never asks which task it runs. A task
owns its data, model, augmentation, losses, evaluation, metrics, report and export, and its predictor
(``Task.predictor`` -> ``TaskPredictor`` -> ``TaskResult``), which ``swinkit predict``, ``batch`` and
``serve`` run without knowing the task.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from PIL import Image
    from pydantic import BaseModel

    from swinkit.engine.config import TrainConfig
    from swinkit.engine.distributed import DistContext

R = TypeVar("R")


class Evaluator(ABC):
    """detectron2's ``DatasetEvaluator`` contract: ``reset()``, ``process(batch, outputs)`` per batch,
    then ``compute()`` (on every rank; it gathers across torch.distributed ranks) -> metrics dict."""

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def process(self, batch: Any, outputs: Any) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, Any]: ...


@dataclass
class TrainLoader:
    """The training loader and the two objects the trainer re-seeds each epoch (``set_epoch``)."""

    loader: DataLoader
    dataset: Any  # has set_epoch(epoch)
    sampler: Any  # has set_epoch(epoch, skip=...) and shard_length()


class TaskResult(Protocol):
    """One image's result of a task's predictor."""

    def to_azure(self) -> dict[str, Any]:
        """The task's documented response object (``POST /score``, a ``swinkit batch``/``predict`` row)."""
        ...

    def lines(self) -> list[str]:
        """The result as short lines of text (``swinkit predict``'s table)."""
        ...

    def save_image(self, image: Image.Image, path: str | os.PathLike) -> Path:
        """``image`` annotated with the result, as a PNG at ``path`` (``swinkit predict --visualize``)."""
        ...


class TaskPredictor(Protocol):
    """A saved model in eval mode with its preprocessing: ``prepare`` each image, then ``infer`` batches."""

    batch_size: int  # images per forward pass
    labels: list[str]  # the model's label names ([] when it has none)

    @property
    def azure_task(self) -> str:
        """The Azure ML task name the endpoint reports, e.g. ``image-classification``."""
        ...

    @property
    def response_model(self) -> type[BaseModel]:
        """The pydantic schema of ``TaskResult.to_azure()`` (the endpoint's OpenAPI and validation)."""
        ...

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) model input of one decoded RGB image (runs in decoding threads and processes); a task
        whose results need more than the pixels returns its own picklable object (a detector: the resized
        pixels with their ``ImageMeta``), which only its ``infer`` reads."""
        ...

    def infer(self, pixels: Sequence[torch.Tensor]) -> Sequence[TaskResult]:
        """One result per prepared image, same order (equal shapes run as one batch: ``run_by_shape``)."""
        ...

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` tells about the model beyond its labels, e.g. its preprocessing."""
        ...

    def fingerprint(self) -> tuple[str, str]:
        """(config hash, fingerprint of the config, labels and weights): who wrote a ``swinkit batch`` output."""
        ...


def run_by_shape(pixels: Sequence[torch.Tensor], run: Callable[[torch.Tensor], Sequence[R]]) -> list[R]:
    """``run`` on each group of equal-shape (3, H, W) tensors stacked to (B, 3, H, W); results in input order.

    Shapes differ when the preprocessing keeps the aspect ratio (``size: {shortest_edge: ...}``).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, tensor in enumerate(pixels):
        groups.setdefault(tuple(tensor.shape), []).append(i)
    out: list[Any] = [None] * len(pixels)
    for indices in groups.values():
        results = run(torch.stack([pixels[i] for i in indices]))
        for i, result in zip(indices, results, strict=True):
            out[i] = result
    return out


class Task(ABC):
    """One task of swinkit. ``get_task(name)(config)`` gives an instance bound to one run's config."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True  # direction of ``primary_metric``
    default_recipe: ClassVar[str] = "finetune"  # the recipe (engine.config.RECIPES) of a run without --recipe
    # the task's own config section (YAML ``{options_section}:``, ``--set {options_section}.KEY=...``), typed by
    # a dataclass of defaults; a run's ``TrainConfig.task_options`` holds it. None: the shared sections suffice
    options_section: ClassVar[str | None] = None
    options_class: ClassVar[type | None] = None

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @classmethod
    @abstractmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        """Whether a saved model's config.json (as a dict) is a model of this task."""

    @classmethod
    def check_preset(cls, name: str) -> None:
        """Raise ValueError when ``model.preset`` names no architecture this task builds."""
        from swinkit.presets import get_preset

        get_preset(name)

    @property
    @abstractmethod
    def primary_metric(self) -> str:
        """The metric name in ``Evaluator.compute()`` that picks the best epoch."""

    @abstractmethod
    def load_data(self) -> Any:
        """The run's data: an object with ``train`` and ``val`` (each with ``len()`` and ``summary(title)``)."""

    @abstractmethod
    def build_model(self, data: Any) -> nn.Module:
        """The model to train, on the CPU, initialised from ``config.run.seed``."""

    @property
    def val_interval(self) -> int | None:
        """Optimizer steps between validations of an iteration-based run (mmengine's ``val_interval``);
        None, the default: validate at each epoch's end."""
        return None

    def distributed_model(self, model: nn.Module, context: DistContext) -> nn.Module:
        """``model`` (on ``context.device``) as this task trains it across ``context``'s processes, before
        DistributedDataParallel wraps it (semantic segmentation: SyncBN heads); by default unchanged."""
        return model

    @abstractmethod
    def processor(self, model: nn.Module) -> Any:
        """The evaluation preprocessing (has ``to_preprocessor_config()``), as saved with the model."""

    @abstractmethod
    def train_loader(self, data: Any, processor: Any, context: DistContext) -> TrainLoader: ...

    @abstractmethod
    def eval_loader(self, data: Any, processor: Any, batch_size: int, context: DistContext) -> DataLoader: ...

    @abstractmethod
    def losses(
        self,
        model: nn.Module,
        batch: Any,
        rng: np.random.Generator,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        """Named float32 losses of one training batch (already on the device); the trainer sums them.
        ``rng`` is the step's generator for batch augmentation (Mixup/CutMix)."""

    @abstractmethod
    def infer(self, model: nn.Module, batch: Any) -> Any:
        """The model's output on an evaluation batch (eval mode, no grad, inside autocast)."""

    @abstractmethod
    def evaluator(self, context: DistContext) -> Evaluator: ...

    @abstractmethod
    def summary_line(self, metrics: dict[str, Any]) -> str:
        """The headline metrics in one short line (epoch lines and the final line)."""

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        """Task-specific fields at the top of metrics.json."""
        return {}

    def write_epoch_report(self, directory: str | os.PathLike, epoch: int, evaluator: Evaluator) -> dict:
        """The task's files of one epoch (1-based ``epoch``) from the evaluator that computed its metrics,
        written on the main rank after ``compute()``; by default none. Returns {name: path written}."""
        return {}

    @abstractmethod
    def write_report(
        self, directory: str | os.PathLike, report: dict[str, Any], evaluator: Evaluator
    ) -> dict:
        """metrics.json (``report``) and the task's plots, from the evaluator that computed the metrics."""

    @abstractmethod
    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        """The trained model as a saved model (config.json, weights, preprocessing) in ``directory``."""

    def description(self, model: nn.Module, processor: Any) -> dict[str, str]:
        """What makes a checkpoint file load as exactly this model (safetensors metadata and training state):
        by default the Swin model's config.json and the preprocessing."""
        from swinkit.sources import description_metadata

        return description_metadata(model.config, processor.to_preprocessor_config())

    @classmethod
    def predictor(
        cls,
        source: str | os.PathLike,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        top_k: int | None = None,
        threshold: float | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
    ) -> TaskPredictor:
        """The predictor of a saved model of this task; results list at most ``top_k`` items (labels,
        objects) scoring at least ``threshold``, each defaulting to the task's own rule. Its network runs on
        ``runtime`` at ``precision`` (``swinkit.runtime.selection.backend_for``: a callable in place of the
        ``nn.Module`` returning the raw outputs; the task's post-processing stays in its predictor).

        By default a task makes no predictions (a pretraining task: its model is fine-tuned instead).
        """
        shown = cls.name.replace("_", "-")
        raise ValueError(
            f"a {shown} model has no predictions; fine-tune it with swinkit train --pretrained RUN"
        )

    @classmethod
    def report_text(cls, report: dict[str, Any]) -> str:
        """What ``swinkit evaluate`` prints of a report: by default its scalar metrics, one per line."""
        return "\n".join(f"{k}: {v:.4f}" for k, v in report.items() if isinstance(v, float))

    @classmethod
    def evaluate_saved(
        cls,
        source: str | os.PathLike,
        data: str | os.PathLike,
        *,
        output: str | os.PathLike | None = None,
        batch_size: int = 32,
        threshold: float = 0.5,
        num_workers: int = 0,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """The metrics of a saved model of this task on ``data`` (``output``: metrics.json and plots).

        By default a task has no stand-alone evaluation (a pretraining task is judged by its fine-tunes).
        """
        shown = cls.name.replace("_", "-")
        raise ValueError(
            f"a {shown} model has no evaluation of its own; fine-tune it with swinkit train --pretrained RUN"
        )


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, or a tuple/list/dict of them) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_length(batch: Any) -> int:
    """The number of samples in ``batch``: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch
    for item in items:
        return batch_length(item)
    raise ValueError("a batch must hold at least one tensor to count its samples")

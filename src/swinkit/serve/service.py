"""What the endpoint serves: a model behind a fixed protocol of prepare -> batched infer -> results.

``ScoringService`` is the protocol the app runs; ``TaskService`` implements it for every task over the task's
predictor (``swinkit.tasks.base.TaskPredictor``), so a new task is served without any change here: its
predictor's ``prepare`` and ``infer``, its results' ``to_azure()`` validated by its ``response_model``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from PIL import Image
from pydantic import BaseModel

from swinkit.inference import load_predictor, task_of_source
from swinkit.tasks.base import TaskPredictor


class ScoringService(Protocol):
    """A served model: ``prepare`` runs per image in request threads, ``infer`` on batches in the worker."""

    task: str  # Azure ML task name, e.g. "image-classification"
    labels: list[str]

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) model input of one decoded RGB image."""
        ...

    def infer(self, pixels: list[torch.Tensor]) -> list[BaseModel]:
        """One result per prepared image, same order."""
        ...

    def example(self) -> torch.Tensor:
        """A prepared input, for warming the model up."""
        ...

    def info(self) -> dict[str, Any]:
        """Model description for ``GET /info``: the swinkit task, problem_type and preprocessing."""
        ...


class TaskService:
    """A saved model of any task, served through its task's predictor."""

    def __init__(self, predictor: TaskPredictor, task_name: str = "classification") -> None:
        self.predictor = predictor
        self.task_name = task_name  # the swinkit task (registry name)
        self.labels = list(predictor.labels)
        self.task = predictor.azure_task
        self.response_model: type[BaseModel] = predictor.response_model

    @classmethod
    def load(
        cls,
        source: str,
        *,
        device: str = "cpu",
        top_k: int | None = None,
        threshold: float | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
        openvino_hint: str | None = None,
        **options: Any,
    ) -> TaskService:
        """The service for any saved model swinkit reads, of the task its config names, its network on
        ``runtime`` at ``precision`` (an OpenVINO backend compiled for ``openvino_hint``; ``prepack``: torch fp32
        with oneDNN-prepacked linear layers); ``top_k`` and
        ``threshold`` are its predictor's, e.g. a detector's maximum detections and score threshold;
        ``options`` are the task's own predictor settings (semantic segmentation: ``mode``, ``tta``)."""
        predictor = load_predictor(
            source, device=device, top_k=top_k, threshold=threshold, runtime=runtime, precision=precision,
            prepack=prepack, **options,
        )  # fmt: skip
        backend = getattr(predictor, "backend", None)
        if openvino_hint is not None and hasattr(backend, "set_hint"):
            backend.set_hint(openvino_hint)
        if hasattr(backend, "compile_in_background"):  # OpenVINO: a new batch size never stalls a request
            backend.compile_in_background = True
        return cls(predictor, task_of_source(source).name)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        return self.predictor.prepare(image)

    def infer(self, pixels: list[torch.Tensor]) -> list[BaseModel]:
        """The task's result for each image, checked against its response schema."""
        return [self.response_model.model_validate(r.to_azure()) for r in self.predictor.infer(pixels)]

    def example(self) -> torch.Tensor:
        return self.prepare(Image.new("RGB", (256, 256), (124, 116, 104)))

    def info(self) -> dict[str, Any]:
        return {"swinkit_task": self.task_name, **self.predictor.info()}


ClassificationService = TaskService  # the name the classification-only endpoint had

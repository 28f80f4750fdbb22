"""What the endpoint serves: a model behind a fixed protocol of prepare -> batched infer -> results.

``ScoringService`` is the protocol the app runs; ``ClassificationService`` implements it for image
classification over a ``swinkit.inference.Predictor``. A detection or segmentation head implements the same
protocol, returning ``DetectionResult`` / ``SegmentationResult`` objects.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from PIL import Image
from pydantic import BaseModel

from swinkit.inference import Predictor
from swinkit.serve.schemas import ClassificationResult


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
        """Model description for ``GET /info``: problem_type and preprocessing."""
        ...


class ClassificationService:
    """Image classification: probabilities of every label (softmax, or sigmoid for multi-label models)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.labels = list(predictor.labels)
        self.task = (
            "image-classification-multilabel"
            if predictor.multi_label and len(self.labels) > 1
            else "image-classification"
        )

    @classmethod
    def load(cls, source: str, *, device: str = "cpu") -> ClassificationService:
        """The service for any source ``swinkit.from_pretrained`` reads."""
        return cls(Predictor.from_pretrained(source, device=device))

    def prepare(self, image: Image.Image) -> torch.Tensor:
        return self.predictor.processor(image)

    def infer(self, pixels: list[torch.Tensor]) -> list[BaseModel]:
        """Probabilities for each image; images of different sizes (aspect-keeping processors) run apart."""
        return [
            ClassificationResult(**self.predictor.make_prediction(row).to_azure())
            for row in self.predictor.probabilities(pixels)
        ]

    def example(self) -> torch.Tensor:
        return self.prepare(Image.new("RGB", (256, 256), (124, 116, 104)))

    def info(self) -> dict[str, Any]:
        return {
            "problem_type": self.predictor.problem_type,
            "preprocessing": self.predictor.processor.to_preprocessor_config(),
        }

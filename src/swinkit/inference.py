"""Classifying images with a Swin checkpoint: what transformers' image-classification pipeline gives.

``Predictor.from_pretrained(source)`` takes any source ``swinkit.from_pretrained`` reads and the checkpoint's
preprocessing (``swinkit.data.preprocess``). Scores follow the pipeline's default ``function_to_apply``:
sigmoid when the config's ``problem_type`` is ``multi_label_classification`` or the head has one output,
softmax otherwise. Results carry every label's probability in label order (the Azure ML image-classification
schema ``{"probs": [...], "labels": [...]}``) and the top labels.

``Predictor`` is the classification task's predictor (``swinkit.tasks.base.TaskPredictor``); ``load_predictor``
picks the task of any saved model (``task_of_source``) and returns that task's predictor, which ``swinkit
predict``, ``swinkit batch`` and ``swinkit serve`` all run.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from swinkit.data.decode import decode_image
from swinkit.data.preprocess import ImageProcessor, preprocessing_for
from swinkit.loading import load_checkpoint, model_from_checkpoint
from swinkit.models.swin import SwinTransformer
from swinkit.runtime.backends import Backend, TorchBackend, backend_info
from swinkit.runtime.export import is_export
from swinkit.runtime.graph import GraphSpec, TupleOutputs, grey_example, varies_in_size
from swinkit.runtime.selection import backend_for, check_device, runs_own_module
from swinkit.sources import read_description

if TYPE_CHECKING:
    from pydantic import BaseModel

    from swinkit.tasks.base import Task, TaskPredictor

DEFAULT_TOP_K = 5  # the pipeline's default for single-label models
DEFAULT_THRESHOLD = 0.5  # multi-label: a label is predicted when its sigmoid reaches this

ImageInput = str | os.PathLike | bytes | Image.Image


@dataclass
class Prediction:
    """One image's result."""

    labels: list[str]  # every label, in label order
    probs: list[float]  # one per label: softmax (multi-class) or sigmoid (multi-label)
    top: list[tuple[str, float]]  # top-k, or (multi-label) every label above the threshold, best first
    source: str | None = None  # the image path / name

    def to_azure(self) -> dict[str, list]:
        """The Azure ML image-classification output: ``{"probs": [...], "labels": [...]}``."""
        return {"probs": list(self.probs), "labels": list(self.labels)}

    def lines(self) -> list[str]:
        """The top labels as ``label  probability`` lines (``swinkit predict``'s table)."""
        if not self.top:
            return ["(no label above the threshold)"]
        width = max(len(label) for label, _ in self.top)
        return [f"{label:<{width}}  {prob:7.2%}" for label, prob in self.top]

    def save_image(self, image: Image.Image, path: str | os.PathLike) -> Path:
        """``image`` annotated with the top labels, as a PNG at ``path``."""
        from swinkit.visualize import save_prediction_image

        return save_prediction_image(image, self.top, path)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _source_name(image: ImageInput) -> str | None:
    return str(image) if isinstance(image, (str, os.PathLike)) else None


class Predictor:
    """A classifier in eval mode with its preprocessing; batched, gradient-free inference."""

    def __init__(
        self,
        model: SwinTransformer,
        processor: ImageProcessor,
        *,
        batch_size: int = 16,
        device: str = "cpu",
        top_k: int | None = None,
        threshold: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        if model.config.num_classes == 0:
            raise ValueError(
                "the model has no classification head (num_classes=0); it cannot classify images"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.processor = processor
        self.batch_size = batch_size
        self.labels: list[str] = list(model.config.label_names)
        self.problem_type: str = model.config.problem_type
        self.top_k, self.threshold = top_k, threshold  # what ``infer``'s results list as their top labels
        self.backend: Backend = (
            backend if backend is not None else TorchBackend(self.model)
        )  # runs the network

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        batch_size: int = 16,
        device: str = "cpu",
        top_k: int | None = None,
        threshold: float | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
    ) -> Predictor:
        """A predictor for a hub id, HF folder, checkpoint file in any layout, preset name or export folder.

        ``runtime`` (torch, openvino, onnxruntime) and ``precision`` (fp32, bf16, int8) choose the backend
        (``swinkit.runtime.selection.backend_for``): an export folder runs its graph by default. ``prepack``
        runs torch fp32 on the CPU with oneDNN-prepacked linear layers (faster at small batches, logits within
        1e-5; a copy of the network's weights).
        """
        check_device(runtime, device)
        checkpoint = load_checkpoint(source)
        model = model_from_checkpoint(checkpoint).eval()
        processor = preprocessing_for(checkpoint)
        predictor = cls(
            model, processor, batch_size=batch_size, device=device, top_k=top_k, threshold=threshold
        )
        if runs_own_module(runtime, precision, checkpoint.path, prepack):
            return predictor
        backend = backend_for(
            predictor.model,
            checkpoint.path,
            predictor.fingerprint()[1],
            predictor.export_graph,
            runtime=runtime,
            precision=precision,
            device=device,
            prepack=prepack,
        )
        return predictor.with_backend(backend)

    def with_backend(self, backend: Backend) -> Predictor:
        """This predictor with its network run by ``backend`` (same model, preprocessing and options)."""
        clone = copy.copy(self)
        clone.backend = backend
        return clone

    def export_graph(self) -> GraphSpec:
        """The network as an exportable graph (``swinkit.runtime.graph``): pixels -> (logits,), traced on a
        grey image. Height and width are dynamic only when the preprocessing keeps the aspect ratio: a
        fixed-size classifier gets a static graph (``swinkit.runtime.export`` has the figures)."""
        dynamic = varies_in_size(self.processor)
        return GraphSpec(
            TupleOutputs(self.model), ("logits",), grey_example(self.processor), dynamic_hw=dynamic
        )

    @property
    def azure_task(self) -> str:
        """The Azure ML task name: ``image-classification`` or ``image-classification-multilabel``."""
        multi_label = self.multi_label and len(self.labels) > 1
        return "image-classification-multilabel" if multi_label else "image-classification"

    @property
    def response_model(self) -> type[BaseModel]:
        """The served result's schema: ``{"probs": [...], "labels": [...]}``."""
        from swinkit.serve.schemas import ClassificationResult

        return ClassificationResult

    @property
    def prepare(self) -> ImageProcessor:
        """The preprocessing: RGB image -> (3, H, W) model input."""
        return self.processor

    def infer(self, pixels: Sequence[torch.Tensor]) -> list[Prediction]:
        """One ``Prediction`` per prepared image, in order, its top labels chosen by ``top_k``/``threshold``."""
        return [
            self.make_prediction(row, top_k=self.top_k, threshold=self.threshold)
            for row in self.probabilities(pixels)
        ]

    def info(self) -> dict[str, Any]:
        """The model's problem type and preprocessing (``GET /info``)."""
        return {
            "problem_type": self.problem_type,
            "preprocessing": self.processor.to_preprocessor_config(),
            **backend_info(self.backend),
        }

    def fingerprint(self) -> tuple[str, str]:
        """(config hash, fingerprint of config, labels and weights): ``swinkit batch``'s output owner."""
        from swinkit.batch_output import model_fingerprint

        return model_fingerprint(self.model, self.labels)

    @property
    def multi_label(self) -> bool:
        """Whether scores are independent sigmoids (multi-label or a single output) rather than a softmax."""
        return self.problem_type == "multi_label_classification" or len(self.labels) == 1

    def predict_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, num_classes) float32 probabilities on the CPU."""
        with torch.inference_mode():
            logits = self.backend(pixel_values.to(self.device)).float()
            probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu()

    def make_prediction(
        self,
        probs: Sequence[float],
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        source: str | None = None,
    ) -> Prediction:
        """A ``Prediction`` from one image's probabilities.

        Single-label: the ``top_k`` (default 5) most probable labels, those below ``threshold`` dropped.
        Multi-label: every label at or above ``threshold`` (default 0.5), at most ``top_k`` of them.
        """
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        values = [float(p) for p in probs]
        if len(values) != len(self.labels):
            raise ValueError(f"{len(values)} probabilities for {len(self.labels)} labels")
        ranked = sorted(zip(self.labels, values, strict=True), key=lambda item: item[1], reverse=True)
        if self.multi_label:
            cut = DEFAULT_THRESHOLD if threshold is None else threshold
            top = [item for item in ranked if item[1] >= cut][:top_k]
        else:
            top = ranked[: DEFAULT_TOP_K if top_k is None else top_k]
            if threshold is not None:
                top = [item for item in top if item[1] >= threshold]
        return Prediction(list(self.labels), values, top, source)

    def probabilities(self, pixels: Sequence[torch.Tensor]) -> list[list[float]]:
        """Probabilities of (3, H, W) tensors, in order; tensors of equal size run as one batch.

        Sizes differ when the preprocessing keeps the aspect ratio (``size: {shortest_edge: ...}``).
        """
        from swinkit.tasks.base import run_by_shape

        return run_by_shape(pixels, lambda batch: self.predict_pixels(batch).tolist())

    def predict(
        self, images: Sequence[ImageInput], *, top_k: int | None = None, threshold: float | None = None
    ) -> list[Prediction]:
        """One ``Prediction`` per image, in order; images are paths, encoded bytes or PIL images.

        Raises ``swinkit.data.decode.ImageDecodeError`` (naming the file) for an image that cannot be read.
        """
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
            images = [images]
        results: list[Prediction] = []
        for chunk in _chunks(images, self.batch_size):
            pixels = [self.processor(decode_image(image)) for image in chunk]
            for image, probs in zip(chunk, self.probabilities(pixels), strict=True):
                results.append(
                    self.make_prediction(probs, top_k=top_k, threshold=threshold, source=_source_name(image))
                )
        return results


def saved_model_config(source: str | os.PathLike) -> dict[str, Any] | None:
    """The config.json (as a dict) that describes a saved model, or None for a bare checkpoint: the
    description ``load_checkpoint`` goes by (a file's embedded one, a folder's config.json, a run's)."""
    return read_description(source)[1]


def task_of_source(source: str | os.PathLike) -> type[Task]:
    """The task of a saved model: from its config.json or embedded description; classification without one."""
    from swinkit.tasks import ClassificationTask, task_of_saved_model

    config = saved_model_config(source)
    return ClassificationTask if config is None else task_of_saved_model(config)


def check_task_options(method: Any, options: dict[str, Any], task: type[Task], what: str) -> None:
    """ValueError naming the first of ``options`` (a task's own settings, e.g. ``tta``) that ``method``,
    the task's predictor or evaluation, does not take."""
    import inspect

    known = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in known.values()):
        return
    for name in options:
        if name not in known:
            shown = task.name.replace("_", "-")
            raise ValueError(f"--{name.replace('_', '-')} is not {what} option of a {shown} model")


def load_predictor(
    source: str | os.PathLike,
    *,
    device: str = "cpu",
    batch_size: int = 16,
    top_k: int | None = None,
    threshold: float | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    prepack: bool = False,
    **options: Any,
) -> TaskPredictor:
    """The predictor of ``source``'s task (``task_of_source``), loaded from ``source``, its network run by
    ``runtime`` at ``precision`` (defaults: an export folder's own, else torch fp32; ``prepack``: torch fp32
    with oneDNN-prepacked linear layers); ``options`` are the task's own predictor settings (semantic
    segmentation: ``mode``, ``tta``)."""
    task = task_of_source(source)
    if runtime or precision or is_export(source):
        options = {**options, "runtime": runtime, "precision": precision}
    if prepack:
        options = {**options, "prepack": True}
    check_task_options(task.predictor, options, task, "a prediction")
    return task.predictor(
        source, device=device, batch_size=batch_size, top_k=top_k, threshold=threshold, **options
    )

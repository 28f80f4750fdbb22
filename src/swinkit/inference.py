"""Classifying images with a Swin checkpoint: what transformers' image-classification pipeline gives.

``Predictor.from_pretrained(source)`` takes any source ``swinkit.from_pretrained`` reads and the checkpoint's
preprocessing (``swinkit.data.preprocess``). Scores follow the pipeline's default ``function_to_apply``:
sigmoid when the config's ``problem_type`` is ``multi_label_classification`` or the head has one output,
softmax otherwise. Results carry every label's probability in label order (the Azure ML image-classification
schema ``{"probs": [...], "labels": [...]}``) and the top labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from swinkit.data.decode import decode_image
from swinkit.data.preprocess import ImageProcessor, preprocessing_for
from swinkit.loading import load_checkpoint, model_from_checkpoint
from swinkit.models.swin import SwinTransformer

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


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _source_name(image: ImageInput) -> str | None:
    return str(image) if isinstance(image, (str, os.PathLike)) else None


class Predictor:
    """A classifier in eval mode with its preprocessing; batched, gradient-free inference."""

    def __init__(
        self, model: SwinTransformer, processor: ImageProcessor, *, batch_size: int = 16, device: str = "cpu"
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

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike, *, batch_size: int = 16, device: str = "cpu"
    ) -> Predictor:
        """A predictor for a hub id, HF folder, checkpoint file in any layout or preset name."""
        checkpoint = load_checkpoint(source)
        model = model_from_checkpoint(checkpoint)
        return cls(model, preprocessing_for(checkpoint), batch_size=batch_size, device=device)

    @property
    def multi_label(self) -> bool:
        """Whether scores are independent sigmoids (multi-label or a single output) rather than a softmax."""
        return self.problem_type == "multi_label_classification" or len(self.labels) == 1

    def predict_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, num_classes) float32 probabilities on the CPU."""
        with torch.inference_mode():
            logits = self.model(pixel_values.to(self.device)).float()
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
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(pixels):
            groups.setdefault(tuple(tensor.shape), []).append(i)
        out: list[list[float]] = [[] for _ in pixels]
        for indices in groups.values():
            probs = self.predict_pixels(torch.stack([pixels[i] for i in indices])).tolist()
            for i, p in zip(indices, probs, strict=True):
                out[i] = p
        return out

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

"""Running a saved detector (Mask R-CNN or Faster R-CNN) on images: the instance tasks' ``TaskPredictor``.

``prepare`` is mmdetection's test pipeline up to the batch (``DetectionPreprocessor``: keep-ratio resize,
normalise) and keeps the image's ``ImageMeta`` with its pixels (``PreparedImage``), since the detections go
back to the original size; ``infer`` pads a batch (to multiples of 32, as ``DetDataPreprocessor``), runs the
model and returns one ``InstancePrediction`` per image, the objects scoring at least ``threshold`` (default:
the model's own test rule, mmdetection's ``score_thr`` 0.05), at most ``top_k`` (default: its ``max_per_img``).

Runtimes (issue 14): the network a backend runs is the detector's dense half (``MaskRCNN.dense``: backbone, FPN
and RPN head convs, most of the compute); proposals (NMS), RoIAlign, the box and mask heads and mask pasting run
in torch on the backend's outputs (``MaskRCNN.predict_dense``), the same code whatever the runtime.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from swinkit.models.detection.checkpoints import config_from_json, load_mmdet, model_from_state_dict
from swinkit.models.detection.mask_rcnn import DenseGraph, MaskRCNN, dense_output_names, split_dense
from swinkit.models.detection.preprocess import DetectionPreprocessor
from swinkit.models.detection.structures import Detections, ImageMeta
from swinkit.runtime.backends import Backend, TorchBackend, backend_info
from swinkit.runtime.graph import GREY, GraphSpec
from swinkit.tasks.instance_results import InstancePrediction

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass
class PreparedImage:
    """One image through the test pipeline: its resized, normalised pixels and where they came from."""

    pixels: torch.Tensor  # (3, h, w) float32, not padded
    meta: ImageMeta
    pad_size_divisor: int = 32  # the detector's padding of a batch (DetDataPreprocessor's pad_size_divisor)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    def graph_input(self) -> torch.Tensor:
        """The image alone as the dense graph takes it: (3, H, W) zero-padded to multiples of the divisor
        (what int8 calibration feeds the graph, ``swinkit.runtime.quantize``)."""
        d = self.pad_size_divisor
        _, h, w = self.pixels.shape
        return F.pad(self.pixels, (0, -w % d, 0, -h % d))  # (3, H, W)


def load_detector(source: str | os.PathLike) -> tuple[MaskRCNN, DetectionPreprocessor]:
    """The detector and its preprocessing (``read_detector``, without where they were read from)."""
    return read_detector(source)[:2]


def read_detector(source: str | os.PathLike) -> tuple[MaskRCNN, DetectionPreprocessor, Path]:
    """The detector, its preprocessing and the file or folder read of a saved model folder or a ``model.safetensors`` carrying its
    description (swinkit's layout, ``swinkit.models.detection.checkpoints.save_pretrained``), or of an
    mmdetection checkpoint file (``load_mmdet``: mmdet 3.x or the official Swin detection repository's)."""
    from swinkit.checkpoint_io import load_state_file
    from swinkit.loading import read_description

    path, config_dict, preprocessing = read_description(source)
    if config_dict is None:
        raise ValueError(
            f"{source} has no config.json or embedded description saying which detector it holds"
        )
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise ValueError(f"{path} holds no model.safetensors with the detector's weights")
    config = config_from_json(config_dict)
    if weights.suffix == ".safetensors":
        model = model_from_state_dict(load_state_file(weights), config)
    else:
        model = load_mmdet(weights, config)
    if preprocessing is None:
        return model, DetectionPreprocessor.from_config(config), path
    return model, DetectionPreprocessor.from_preprocessor_config(preprocessing), path


def _to_prediction(
    found: Detections, meta: ImageMeta, labels: Sequence[str], threshold: float | None, top_k: int | None
) -> InstancePrediction:
    height, width = meta.ori_shape
    masks = None if found.masks is None else found.masks.cpu().numpy().astype(bool)  # (N, H0, W0)
    prediction = InstancePrediction(
        found.boxes.detach().cpu().double().numpy(),
        found.scores.detach().cpu().double().numpy(),
        found.labels.detach().cpu().numpy().astype(np.int64),
        labels, width, height, masks,
    )  # fmt: skip
    return prediction.top(threshold=threshold, top_k=top_k)


class InstancePredictor:
    """A detector in eval mode with its preprocessing; batched, gradient-free inference."""

    # the effective top_k / threshold are in info() (max_detections, score_threshold): a batch output records
    # those, so a flag restating the model's default resumes it
    flags_shape_rows = False

    def __init__(
        self,
        model: MaskRCNN,
        preprocessor: DetectionPreprocessor,
        *,
        batch_size: int = 2,
        device: str = "cpu",
        top_k: int | None = None,
        threshold: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"the maximum number of detections must be at least 1, got {top_k}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the score threshold must be in [0, 1], got {threshold}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.preprocessor = preprocessor
        self.batch_size, self.top_k, self.threshold = batch_size, top_k, threshold
        self.labels: list[str] = list(model.config.label_names)
        self.backend: Backend = backend if backend is not None else TorchBackend(DenseGraph(self.model))

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
        **options: Any,
    ) -> InstancePredictor:
        """The predictor of a saved detector or its export folder (``read_detector``), its dense half run by
        ``runtime`` at ``precision`` (``swinkit.runtime.selection.backend_for``; default: an export folder's
        own graph, else torch fp32; ``prepack``: torch fp32 with oneDNN-prepacked linear layers); ``options``
        as the constructor's."""
        from swinkit.runtime.selection import backend_for, check_device, runs_own_module

        check_device(runtime, options.get("device", "cpu"))
        model, preprocessor, path = read_detector(source)
        predictor = cls(model, preprocessor, **options)
        if runs_own_module(runtime, precision, path, prepack):
            return predictor
        backend = backend_for(
            DenseGraph(predictor.model), path, predictor.fingerprint()[1], predictor.export_graph,
            runtime=runtime, precision=precision, device=str(predictor.device), prepack=prepack,
        )  # fmt: skip
        return predictor.with_backend(backend)

    def with_backend(self, backend: Backend) -> InstancePredictor:
        """This predictor with its dense half run by ``backend`` (same model, preprocessing and options)."""
        clone = copy.copy(self)
        clone.backend = backend
        return clone

    def export_graph(self) -> GraphSpec:
        """The detector's dense half as an exportable graph (``swinkit.runtime.graph``): padded pixels
        (B, 3, H, W) -> the FPN maps, RPN logits and RPN deltas per level (``MaskRCNN.dense``), with dynamic
        height and width (the keep-ratio resize makes every aspect ratio its own size); traced on a grey
        image through the test pipeline, padded as ``detect`` pads."""
        prepared = self.prepare(Image.new("RGB", (256, 256), GREY))
        example = self.preprocessor.pad([prepared.pixels])  # (1, 3, H, W)
        names = dense_output_names(self.model.config.num_outs)
        return GraphSpec(DenseGraph(self.model), names, example, dynamic_hw=True)

    @property
    def with_mask(self) -> bool:
        return self.model.with_mask

    @property
    def azure_task(self) -> str:
        return "image-instance-segmentation" if self.with_mask else "image-object-detection"

    @property
    def response_model(self) -> type[BaseModel]:
        """The served result's schema: boxes with polygons (Mask R-CNN) or boxes only (Faster R-CNN)."""
        from swinkit.serve.schemas import DetectionResult, SegmentationResult

        return SegmentationResult if self.with_mask else DetectionResult

    def prepare(self, image: Image.Image) -> PreparedImage:
        """One decoded RGB image resized and normalised as mmdetection's test pipeline does."""
        resized, meta = self.preprocessor.resize(image)
        return PreparedImage(self.preprocessor.normalize(resized), meta, self.preprocessor.pad_size_divisor)

    def detect(self, prepared: Sequence[PreparedImage]) -> list[Detections]:
        """The model's detections of each image (one padded batch), in its original pixels."""
        pixel_values = self.preprocessor.pad([p.pixels for p in prepared]).to(self.device)
        metas = [p.meta for p in prepared]
        with torch.inference_mode():
            dense = split_dense(self.backend(pixel_values))
            return self.model.predict_dense(dense, metas).detections

    def infer(self, prepared: Sequence[PreparedImage]) -> list[InstancePrediction]:
        """One ``InstancePrediction`` per prepared image, in order, ``batch_size`` images per forward pass."""
        results = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            for found, item in zip(self.detect(chunk), chunk, strict=True):
                results.append(_to_prediction(found, item.meta, self.labels, self.threshold, self.top_k))
        return results

    def predict(self, images: Sequence[Image.Image]) -> list[InstancePrediction]:
        """One ``InstancePrediction`` per decoded RGB image."""
        return self.infer([self.prepare(image) for image in images])

    def info(self) -> dict[str, Any]:
        """The preprocessing and the detection rule (``GET /info``)."""
        c = self.model.config
        return {
            "preprocessing": self.preprocessor.to_preprocessor_config(),
            "score_threshold": c.score_threshold if self.threshold is None else self.threshold,
            "max_detections": c.max_per_img if self.top_k is None else min(self.top_k, c.max_per_img),
            **backend_info(self.backend),
        }

    def fingerprint(self) -> tuple[str, str]:
        """(config hash, fingerprint of config, labels and weights): ``swinkit batch``'s output owner."""
        from swinkit.batch_output import model_fingerprint

        return model_fingerprint(self.model, self.labels)

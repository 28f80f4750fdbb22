"""The semantic segmentation task's predictor and result: what ``swinkit predict``, ``batch`` and ``serve``
run for an UperNet.

``prepare`` keeps the decoded image at its original size (a (3, H, W) uint8 tensor), because the result is
mapped back to that size; ``infer`` applies mmsegmentation's test pipeline to each batch of equal-size images
(``Resize(scale=(2048, 512), keep_ratio=True)``, bilinear as mmcv's cv2 backend, then ``(x - mean) / std`` in
0-255 RGB units; no padding: mmseg's ``SegDataPreProcessor`` pads test images only when its ``test_cfg``
asks, which the Swin configs do not), the model (whole image or sliding window), and the mapping back
(``swinkit.models.segmentation.inference``). With ``tta``, the views are those of mmseg's ADE20K
``tta_pipeline``: ``Resize(scale_factor=r, keep_ratio=True)`` of the *original* image for each ratio r
(mmcv's ``Resize`` scales the image it is given, and that pipeline has no 2048x512 resize before it), each
without and with a horizontal flip; their softmaxes at the original size are averaged.

The network runs on a backend (``swinkit.runtime``: torch, OpenVINO or ONNX Runtime at fp32, bf16 or int8)
that computes ``DecodeLogits``, the UperNet's raw logits before the resize to the input size; that resize
and every step after it stay here, the same for every runtime. Sliding windows run fixed crop-size inputs,
so a graph traced at the crop size serves them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from swinkit.data.segmentation import SegmentationProcessor, normalize, rescale_size, resize_image
from swinkit.models.segmentation.inference import (
    TTA_RATIOS,
    DecodeLogits,
    InferenceSettings,
    RuntimeNetwork,
    merge_views,
    to_original,
    view_logits,
)
from swinkit.models.segmentation.upernet import UperNet
from swinkit.runtime.backends import Backend, TorchBackend, backend_info
from swinkit.runtime.graph import GREY, GraphSpec
from swinkit.tasks.base import run_by_shape

if TYPE_CHECKING:
    from pydantic import BaseModel

AZURE_TASK = "image-semantic-segmentation"
DEFAULT_LINES = 10  # classes ``lines()`` lists unless top_k says otherwise


@dataclass
class SegmentationPrediction:
    """One image's semantic segmentation at its original size."""

    label_map: np.ndarray  # (H, W) class index of every pixel
    labels: list[str]  # every class name, in class order
    palette: np.ndarray = field(repr=False)  # (num_classes, 3) uint8 colours of the overlay
    top_k: int | None = None  # classes ``lines()`` lists at most (default 10)
    threshold: float | None = None  # smallest pixel fraction ``lines()`` lists

    def classes(self) -> list[dict[str, Any]]:
        """``{"label", "index", "fraction"}`` of each class present, by decreasing share of the pixels."""
        counts = np.bincount(self.label_map.ravel(), minlength=len(self.labels))
        total = self.label_map.size
        present = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
        return [{"label": self.labels[i], "index": int(i), "fraction": counts[i] / total} for i in present]

    def to_azure(self) -> dict[str, Any]:
        """``{"label_map": base64 PNG, "width", "height", "classes": [...]}`` (``SemanticSegmentationResult``)."""
        from swinkit.visualize_segmentation import label_map_image

        buffer = io.BytesIO()
        label_map_image(self.label_map, len(self.labels)).save(buffer, format="PNG")
        height, width = self.label_map.shape
        return {
            "label_map": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "width": width,
            "height": height,
            "classes": [{**c, "fraction": float(c["fraction"])} for c in self.classes()],
        }

    def lines(self) -> list[str]:
        """The largest classes as ``label  fraction`` lines (``swinkit predict``'s table)."""
        shown = [c for c in self.classes() if self.threshold is None or c["fraction"] >= self.threshold]
        shown = shown[: DEFAULT_LINES if self.top_k is None else self.top_k]
        if not shown:
            return ["(no class covers the threshold's share of the pixels)"]
        width = max(len(c["label"]) for c in shown)
        return [f"{c['label']:<{width}}  {c['fraction']:7.2%}" for c in shown]

    def save_image(self, image: Image.Image, path: str | os.PathLike) -> Path:
        """The colour overlay with its legend as a PNG at ``path``, and the label map (one class index per
        pixel, original size) as ``<stem>_labels.png`` beside it; returns the overlay's path."""
        from swinkit.visualize_segmentation import draw_segmentation, label_map_image, save_png

        path = Path(path)
        save_png(label_map_image(self.label_map, len(self.labels)), path.with_name(f"{path.stem}_labels.png"))
        legend = [(c["index"], c["label"], c["fraction"]) for c in self.classes()]
        return save_png(draw_segmentation(image, self.label_map, legend, self.palette), path)


def original_pixels(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image, at its size."""
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)


def _views(tta: bool, ratios: Sequence[float]) -> list[tuple[float | None, bool]]:
    """(scale factor or None for the test resize, flipped) of each view, in mmseg's TestTimeAug order."""
    return [(r, flip) for r in ratios for flip in (False, True)] if tta else [(None, False)]


def view_size(width: int, height: int, ratio: float | None, scale: tuple[int, int]) -> tuple[int, int]:
    """(width, height) an image is resized to for one view: the test ``Resize(scale, keep_ratio=True)``, or
    for a TTA ratio mmcv's ``Resize(scale_factor=ratio, keep_ratio=True)`` (the scale is the image's own
    size times the ratio, ``int(side * ratio + 0.5)``, and the keep-ratio rule then fits the image into it)."""
    if ratio is None:
        return rescale_size(width, height, scale)
    return rescale_size(width, height, (int(width * ratio + 0.5), int(height * ratio + 0.5)))


class SegmentationPredictor:
    """An UperNet in eval mode with mmseg's test pipeline; batched, gradient-free inference."""

    azure_task = AZURE_TASK
    # top_k / threshold only cut ``lines()``, never a batch row: a batch output does not record them
    flags_shape_rows = False

    def __init__(
        self,
        model: UperNet,
        processor: SegmentationProcessor | None = None,
        *,
        batch_size: int = 1,
        device: str = "cpu",
        settings: InferenceSettings | None = None,
        tta: bool = False,
        tta_ratios: Sequence[float] = TTA_RATIOS,
        top_k: int | None = None,
        threshold: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        from swinkit.visualize_segmentation import palette_for

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if tta and (not tta_ratios or min(tta_ratios) <= 0):
            raise ValueError(f"test-time augmentation needs positive scale ratios, got {list(tta_ratios)}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.processor = processor or SegmentationProcessor()
        self.batch_size = batch_size
        self.settings = settings or InferenceSettings()
        self.tta, self.tta_ratios = tta, tuple(float(r) for r in tta_ratios)
        self.top_k, self.threshold = top_k, threshold
        self.labels: list[str] = list(model.config.label_names)
        self.palette = palette_for(self.labels)
        self.backend: Backend = backend if backend is not None else TorchBackend(DecodeLogits(self.model))
        check_graph_size(self.backend, self.settings)
        self.network = RuntimeNetwork(self.backend, model.num_classes, model.config.align_corners)

    def with_backend(self, backend: Backend) -> SegmentationPredictor:
        """This predictor with its network's raw logits computed by ``backend`` (same model and options)."""
        check_graph_size(backend, self.settings)
        clone = copy.copy(self)
        clone.backend = backend
        clone.network = RuntimeNetwork(backend, self.model.num_classes, self.model.config.align_corners)
        return clone

    def example(self) -> torch.Tensor:
        """(1, 3, h, w) model input of a grey image at the sliding window's crop size (for tracing)."""
        height, width = self.settings.crop_size
        grey = np.full((height, width, 3), GREY, dtype=np.uint8)
        return normalize(grey, self.processor.mean, self.processor.std)[None]

    def export_graph(self) -> GraphSpec:
        """The network as an exportable graph (``swinkit.runtime.graph``): ``DecodeLogits``, normalised view
        pixels (not ``prepare``'s uint8 originals: the view resize stays here) -> (raw logits,), traced at
        the crop size. Height and width are dynamic in every mode: sliding windows too, since mmseg cuts the
        crop to an image smaller than it (a panorama's test-resize view is shorter than a 512 crop)."""
        return GraphSpec(DecodeLogits(self.model), ("logits",), self.example(), dynamic_hw=True)

    def graph_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, h, w) graph input of one prepared (3, H, W) uint8 image: its test-resize view (what int8
        calibration runs the graph on)."""
        return self.view_pixels(pixels[None], None, False)[0].cpu()

    def export_fingerprint(self) -> str:
        """What an export records of this model and a load checks (stale exports): the fingerprint of its
        config, labels, weights and preprocessing with the default inference options, as ``swinkit export``
        loads the model (a graph serves every mode, so the options are not the model's)."""
        return SegmentationPredictor(self.model, self.processor).fingerprint()[1]

    @property
    def response_model(self) -> type[BaseModel]:
        """The served result's schema: ``{"label_map", "width", "height", "classes"}``."""
        from swinkit.serve.schemas import SemanticSegmentationResult

        return SemanticSegmentationResult

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) uint8 pixels of the decoded image at its original size (``infer`` resizes them)."""
        return original_pixels(image)

    def infer(self, pixels: Sequence[torch.Tensor]) -> list[SegmentationPrediction]:
        """One ``SegmentationPrediction`` per prepared image, in order; equal sizes run as one batch."""
        return run_by_shape(pixels, self._predict_batch)

    def _predict_batch(self, batch: torch.Tensor) -> list[SegmentationPrediction]:
        dtype = np.uint8 if len(self.labels) <= 256 else np.int32
        return [
            SegmentationPrediction(m.astype(dtype), self.labels, self.palette, self.top_k, self.threshold)
            for m in self.label_maps(batch)
        ]

    def label_maps(self, batch: torch.Tensor) -> list[np.ndarray]:
        """(H, W) label map of each of (B, 3, H, W) uint8 images: the argmax of ``scores``. One view's logits
        are brought to the original size one image at a time, so a batch never holds B full-size score maps."""
        if self.tta:
            return list(self.scores(batch).argmax(dim=1).cpu().numpy())
        align = self.model.config.align_corners
        with torch.inference_mode():
            logits = view_logits(self.network, self.view_pixels(batch, None, False), self.settings).float()
            return [
                to_original(row[None], batch.shape[2:], align_corners=align).argmax(dim=1)[0].cpu().numpy()
                for row in logits  # (num_classes, h, w) each
            ]

    def view_pixels(self, batch: torch.Tensor, ratio: float | None, flipped: bool) -> torch.Tensor:
        """(B, 3, h, w) normalised model input of one view of (B, 3, H, W) uint8 images."""
        height, width = batch.shape[2:]
        size = view_size(width, height, ratio, self.processor.scale)
        views = []
        for image in batch.cpu().permute(0, 2, 3, 1).numpy():  # (H, W, 3) each
            resized = resize_image(image, size)  # (h, w, 3)
            views.append(
                normalize(resized[:, ::-1] if flipped else resized, self.processor.mean, self.processor.std)
            )
        return torch.stack(views).to(self.device)

    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, H, W) per-pixel scores at the original size of (B, 3, H, W) uint8 images: the
        logits (one view), or the mean of the views' softmaxes (``tta``); their argmax is the label map."""
        original = batch.shape[2:]
        align = self.model.config.align_corners

        def at_original(ratio: float | None, flipped: bool) -> torch.Tensor:
            logits = view_logits(self.network, self.view_pixels(batch, ratio, flipped), self.settings)
            return to_original(logits.float(), original, flipped=flipped, align_corners=align)

        views = _views(self.tta, self.tta_ratios)
        with torch.inference_mode():
            if not self.tta:
                return at_original(*views[0])
            return merge_views(at_original(r, f) for r, f in views)

    def evaluation_logits(self, model: UperNet, batch: torch.Tensor) -> torch.Tensor:
        """``scores`` as an evaluator's logits (``model`` is this predictor's): the logits, or with ``tta``
        the log of the mean probabilities (the same argmax; their cross entropy is the merged prediction's)."""
        scores = self.scores(batch)
        return scores.clamp_min(1e-12).log() if self.tta else scores

    def info(self) -> dict[str, Any]:
        """The preprocessing and the inference options (``GET /info``)."""
        return {
            "preprocessing": self.processor.to_preprocessor_config(),
            "inference": {**asdict(self.settings), "tta": self.tta, "tta_ratios": list(self.tta_ratios)},
            **backend_info(self.backend),
        }

    def fingerprint(self) -> tuple[str, str]:
        """(config hash, fingerprint of config, labels, weights and inference options)."""
        from swinkit.batch_output import model_fingerprint

        config_hash, weights = model_fingerprint(self.model, self.labels)
        options = {key: value for key, value in self.info().items() if key not in ("runtime", "precision")}
        digest = json.dumps([options, weights], sort_keys=True).encode()
        return config_hash, hashlib.sha256(digest).hexdigest()[:16]


def check_graph_size(backend: Backend, settings: InferenceSettings) -> None:
    """ValueError when ``backend`` runs a graph of one input size (``size``) that ``settings`` cannot feed:
    whole-image inference takes every image's own size; sliding windows take crops of ``crop_size``."""
    size = getattr(backend, "size", None)
    if size is None:
        return
    if settings.mode == "whole":
        raise ValueError(
            f"whole-image inference takes images of any size, but this {backend.runtime} graph was traced "
            f"at {size[0]}x{size[1]} only; use --mode slide (crops of that size) or a dynamic-size export"
        )
    if tuple(size) != tuple(settings.crop_size):
        raise ValueError(
            f"this {backend.runtime} graph takes {size[0]}x{size[1]} inputs, but the sliding window's crops "
            f"are {settings.crop_size[0]}x{settings.crop_size[1]}; export the model at the crop size"
        )


def segmentation_predictor(
    source: str | os.PathLike,
    *,
    device: str = "cpu",
    batch_size: int = 1,
    top_k: int | None = None,
    threshold: float | None = None,
    mode: str = "whole",
    tta: bool = False,
    runtime: str | None = None,
    precision: str | None = None,
    prepack: bool = False,
) -> SegmentationPredictor:
    """The predictor of a saved UperNet (transformers folder, mmseg file, training state, preset, hub id or
    export folder), with the preprocessing saved beside it (else mmseg's ADE20K test pipeline), its network
    on ``runtime`` at ``precision`` (``swinkit.runtime.selection.backend_for``: an export folder runs its
    graph by default; a model is traced on the fly for openvino and onnxruntime; ``prepack``: torch fp32 with
    oneDNN-prepacked linear layers)."""
    from swinkit.loading import read_description
    from swinkit.runtime.selection import check_device
    from swinkit.tasks.segmentation_model import load_upernet

    check_device(runtime, device)
    model, processor = load_upernet(source)
    preprocessing = read_description(source)[2]  # also a file's embedded preprocessor config
    if preprocessing:
        processor = SegmentationProcessor.from_preprocessor_config(preprocessing)
    predictor = SegmentationPredictor(
        model,
        processor,
        batch_size=batch_size,
        device=device,
        settings=InferenceSettings(mode=mode),
        tta=tta,
        top_k=top_k,
        threshold=threshold,
    )
    return _on_runtime(predictor, source, runtime, precision, device, prepack)


def _on_runtime(
    predictor: SegmentationPredictor,
    source: str | os.PathLike,
    runtime: str | None,
    precision: str | None,
    device: str,
    prepack: bool = False,
) -> SegmentationPredictor:
    """``predictor`` with the backend ``runtime``, ``precision`` and ``prepack`` ask for (itself for plain
    torch fp32)."""
    from swinkit.loading import resolve_source
    from swinkit.runtime.selection import backend_for, runs_own_module

    if runs_own_module(runtime, precision, source, prepack):
        return predictor
    backend = backend_for(
        DecodeLogits(predictor.model),
        resolve_source(source),
        predictor.export_fingerprint(),
        predictor.export_graph,
        runtime=runtime,
        precision=precision,
        device=device,
        prepack=prepack,
    )
    return predictor.with_backend(backend)

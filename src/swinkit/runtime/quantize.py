"""int8 post-training static quantization and the agreement check every quantized export passes.

Calibration images are prepared by the model's own preprocessing (the predictor's ``prepare``).

- OpenVINO: ``nncf.quantize`` of the fp32 graph with ``model_type=nncf.ModelType.TRANSFORMER`` (NNCF's
  scheme for transformers: no quantizers on the ops that hurt accuracy, e.g. LayerNorm and Softmax inputs),
  the PERFORMANCE preset (symmetric activations) and the window attention's two batched products left in
  float (``OPENVINO_FLOAT_PATTERNS``); the CPU plugin runs the rest of the graph in bf16 (``backends``).
- ONNX Runtime: ``onnxruntime.quantization.quantize_static`` in QDQ format after ``quant_pre_process``
  (shape inference and graph optimisation), uint8 activations / int8 per-channel weights (the U8S8 kernels
  of AVX-512 VNNI), on the MatMul / Gemm / Conv ops that carry the compute.

The check runs the fp32 reference and the int8 candidate predictors on the same images and compares what a
user sees, through a per-task function (``AGREEMENT_CHECKS``): classification compares top-1 labels and
probabilities; semantic segmentation compares label maps (pixel agreement, and the mIoU of the candidate's
maps against the fp32 ones); detection and instance segmentation score the candidate's detections by COCO AP
with the fp32 detections as ground truth (box AP, and mask AP for Mask R-CNN; 1.0 is full agreement). A task
adds its own check by registering a function and its bounds there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

MAX_CALIBRATION_IMAGES = 300  # NNCF's default subset size


def load_pixels(
    folder: str | os.PathLike, prepare: Callable[[Image.Image], torch.Tensor], limit: int
) -> list:
    """Up to ``limit`` images below ``folder`` (sorted), decoded and prepared: (3, H, W) tensors."""
    from swinkit.batch import iter_image_files
    from swinkit.data.decode import decode_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder {folder}")
    paths = list(iter_image_files(folder))[:limit]
    if not paths:
        raise ValueError(f"{folder} holds no image files to calibrate or validate on")
    return [prepare(decode_image(path)) for path in paths]


def _graph_input(prepared: Any) -> torch.Tensor:
    """A prepared image as its task's graph takes it: the (3, H, W) tensor itself, or (a detector's
    ``PreparedImage``, pixels plus metadata) its ``graph_input()``."""
    return prepared if isinstance(prepared, torch.Tensor) else prepared.graph_input()


def _batches(pixels: Sequence[Any], size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(pixels), size):
        yield torch.stack([_graph_input(p) for p in pixels[start : start + size]]).numpy()  # (b, 3, H, W)


def quantize_onnx(fp32: Path, int8: Path, pixels: Sequence[torch.Tensor], input_name: str) -> Path:
    """``fp32`` quantized to the QDQ ONNX file ``int8``, calibrated (min-max) on ``pixels``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(pixels, 1)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    prepared = int8.with_name(f".{int8.stem}.prepared.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        )
    finally:
        prepared.unlink(missing_ok=True)
    return int8


# Layers NNCF leaves in float, by node name. Names not in a graph are ignored.
# - The window attention's q @ k^T and attn @ v: in float the plugin fuses each block's attention into one
#   bf16 kernel, and the graph ran as fast or faster than with them quantized (Swin-T 224 batch 1, bf16
#   elsewhere, snippets on, alternating in one process: 1.01x, 1.08x and 1.20x in three runs; docs/design.md).
# - The detector's RPN head. Quantized, its convolutions (which read the FPN maps that are also graph outputs)
#   returned logits and deltas wrong by as much as their own size on the OpenVINO CPU plugin (openvino 2026.4,
#   NNCF transformer scheme, with or without bias correction), while ONNX Runtime's QDQ int8 of the same
#   graph kept them within a few percent.
# NNCF matches them with re.match (anchored at the start only): the "$" ends the name
OPENVINO_FLOAT_PATTERNS = (r".*/attn/MatMul(_[0-9]+)?$", r".*/rpn_head/.*")


def quantize_openvino(fp32: Path, pixels: Sequence[torch.Tensor]) -> Any:
    """The fp32 graph (ONNX or IR) quantized by NNCF (transformer scheme), calibrated on ``pixels``; the
    layers ``OPENVINO_FLOAT_PATTERNS`` names stay in float."""
    import nncf

    from swinkit.runtime.openvino_core import kept_signal_stack, openvino_core

    model = openvino_core().read_model(str(fp32))
    dataset = nncf.Dataset(list(_batches(pixels, 1)))
    ignored = nncf.IgnoredScope(patterns=list(OPENVINO_FLOAT_PATTERNS), validate=False)
    with kept_signal_stack():  # NNCF compiles on Cores of its own (runtime/openvino_core.py)
        return nncf.quantize(
            model,
            dataset,
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.PERFORMANCE,  # symmetric: no zero-point subtraction per layer
            subset_size=len(pixels),
            ignored_scope=ignored,
        )


@dataclass(frozen=True)
class Bound:
    """A limit on one agreement figure: at least ``value`` (``minimum``) or at most ``value``."""

    name: str
    value: float
    minimum: bool

    def holds(self, figure: float) -> bool:
        return figure >= self.value if self.minimum else figure <= self.value

    def text(self, figure: float) -> str:
        sign = (">=" if self.minimum else "<=") if self.holds(figure) else ("<" if self.minimum else ">")
        return f"{self.name} {figure:.4f} {sign} {self.value:g}"


def classification_agreement(reference: Any, candidate: Any, pixels: Sequence[torch.Tensor]) -> dict:
    """Top-1 agreement (the argmax label) and the largest probability difference over every image and label."""
    expected = torch.tensor(reference.probabilities(pixels))  # (N, C)
    got = torch.tensor(candidate.probabilities(pixels))
    return {
        "images": len(pixels),
        "top1_agreement": float((expected.argmax(-1) == got.argmax(-1)).float().mean()),
        "max_prob_diff": float((expected - got).abs().max()),
    }


def segmentation_agreement(reference: Any, candidate: Any, pixels: Sequence[torch.Tensor]) -> dict:
    """Label maps of the candidate against the reference's (both at each image's original size): the
    fraction of pixels with the same class, and the mIoU of the candidate's maps scored against the
    reference's as if they were the labels (mmseg's ``IoUMetric``: areas summed over the images, classes in
    neither left out)."""
    from swinkit.evaluation.segmentation import areas_to_metrics, intersect_and_union

    num_classes = len(reference.labels)
    areas = torch.zeros((4, num_classes), dtype=torch.float64)
    same = total = 0
    for image in pixels:
        (expected,), (got,) = reference.label_maps(image[None]), candidate.label_maps(image[None])
        expected, got = torch.from_numpy(expected), torch.from_numpy(got)  # (H, W) each
        areas += intersect_and_union(got, expected, num_classes)
        same, total = same + int((expected == got).sum()), total + expected.numel()
    return {
        "images": len(pixels),
        "pixel_agreement": same / total,
        "miou_vs_fp32": areas_to_metrics(areas)["mIoU"],
    }


def detection_agreement(reference: Any, candidate: Any, prepared: Sequence[Any]) -> dict:
    """COCO AP of the candidate's detections with the reference's as ground truth (``tasks.instance_agreement``)."""
    from swinkit.tasks.instance_agreement import detection_agreement as measure

    return measure(reference, candidate, prepared)


DETECTION_BOUNDS = (Bound("bbox_AP", 0.8, minimum=True), Bound("bbox_AP_50", 0.9, minimum=True))
MASK_BOUNDS = (*DETECTION_BOUNDS, Bound("segm_AP", 0.8, minimum=True))

# swinkit task name -> (measure(reference predictor, candidate predictor, pixels) -> figures, default bounds)
AGREEMENT_CHECKS: dict[str, tuple[Callable[..., dict], tuple[Bound, ...]]] = {
    "classification": (
        classification_agreement,
        (Bound("top1_agreement", 0.98, minimum=True), Bound("max_prob_diff", 0.1, minimum=False)),
    ),
    "semantic_segmentation": (
        segmentation_agreement,
        (Bound("pixel_agreement", 0.98, minimum=True), Bound("miou_vs_fp32", 0.95, minimum=True)),
    ),
    "object_detection": (detection_agreement, DETECTION_BOUNDS),
    "instance_segmentation": (detection_agreement, MASK_BOUNDS),
}


@dataclass(frozen=True)
class Agreement:
    """The figures of a check and which bounds they break."""

    figures: dict[str, float]
    bounds: tuple[Bound, ...]

    @property
    def passed(self) -> bool:
        return all(bound.holds(self.figures[bound.name]) for bound in self.bounds)

    def text(self) -> str:
        shown = ", ".join(bound.text(self.figures[bound.name]) for bound in self.bounds)
        return f"{shown} on {self.figures['images']} images"

    def to_dict(self) -> dict[str, Any]:
        limits = {b.name: {"min" if b.minimum else "max": b.value} for b in self.bounds}
        return {**self.figures, "bounds": limits, "passed": self.passed}


def default_bounds(task: str) -> tuple[Bound, ...]:
    return _check_of(task)[1]


def _check_of(task: str) -> tuple[Callable[..., dict], tuple[Bound, ...]]:
    if task not in AGREEMENT_CHECKS:
        raise ValueError(f"no agreement check for {task} models yet, so they cannot be checked against fp32")
    return AGREEMENT_CHECKS[task]


def check_agreement(
    task: str,
    reference: Any,
    candidate: Any,
    pixels: Sequence[torch.Tensor],
    bounds: Sequence[Bound] | None = None,
) -> Agreement:
    """The candidate predictor's agreement with the reference on ``pixels``, against ``bounds``."""
    measure, defaults = _check_of(task)
    return Agreement(measure(reference, candidate, pixels), tuple(bounds or defaults))

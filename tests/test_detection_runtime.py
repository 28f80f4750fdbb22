"""The detection predictor on every runtime (issue 14): the dense half (backbone, FPN, RPN head convs) runs on
ONNX Runtime or OpenVINO, proposals, RoIAlign, the RoI heads and mask pasting stay in torch, shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.inference import load_predictor
from swinkit.models.detection.checkpoints import save_pretrained
from swinkit.models.detection.mask_rcnn import create_mask_rcnn, split_dense

LABELS = ("can", "carton", "milk_bottle")
FAST = {"test_scale": (96, 64), "rpn_nms_pre": 200, "rpn_max_per_img": 100, "max_per_img": 20}  # CPU-cheap


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """A saved micro Mask R-CNN (random weights, small test scale)."""
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", labels=LABELS, **FAST).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("detector") / "mask")


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Noise with a red rectangle on it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 30, 30)
    return Image.fromarray(pixels)


def assert_same_detections(expected: list, got: list) -> None:
    for a, b in zip(expected, got, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.masks, b.masks)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_the_torch_predictor_runs_the_dense_half_then_the_heads(detector):
    """The split path gives exactly the detector's own forward."""
    predictor = load_predictor(detector)
    prepared = [predictor.prepare(scene(80, 60, 0)), predictor.prepare(scene(60, 90, 1))]
    pixels = predictor.preprocessor.pad([p.pixels for p in prepared])
    metas = [p.meta for p in prepared]
    with torch.inference_mode():
        expected = predictor.model(pixels, metas).detections
        dense = split_dense(predictor.model.dense(pixels))
    assert [tuple(f.shape[2:]) for f in dense.features] == [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2)]
    for a, b in zip(expected, predictor.detect(prepared), strict=True):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    assert predictor.info()["runtime"] == "torch" and predictor.info()["precision"] == "fp32"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_runtimes_give_the_torch_detections(detector, runtime):
    """Dense outputs within 1e-4 of torch, then the same boxes (1e-3), labels and masks."""
    reference = load_predictor(detector)
    candidate = load_predictor(detector, runtime=runtime)
    assert candidate.info()["runtime"] == runtime
    images = [scene(64, 64, 2), scene(128, 128, 3)]  # one padded size: the graph's traced one
    pixels = reference.preprocessor.pad([reference.prepare(image).pixels for image in images])
    for a, b in zip(reference.backend(pixels), candidate.backend(pixels), strict=True):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4
    assert_same_detections(reference.predict(images), candidate.predict(images))

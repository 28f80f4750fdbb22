"""A micro UperNet's network on ONNX Runtime and OpenVINO: the graph (pixels to the raw decode-head logits)
gives the torch logits in slide mode, bf16 label maps agree with fp32 within the documented bounds, the
agreement check sees maps that differ, and the predictor refuses sizes its graph cannot take."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from segmentation_runtime_helpers import balanced_upernet, scene

from swinkit.data.segmentation import SegmentationProcessor
from swinkit.models.segmentation.inference import DecodeLogits, InferenceSettings
from swinkit.runtime.backends import TorchBackend, graph_backend
from swinkit.runtime.export import export_onnx
from swinkit.runtime.quantize import default_bounds, segmentation_agreement
from swinkit.tasks.segmentation_predict import SegmentationPredictor

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

CROP = (64, 64)
SLIDE = InferenceSettings(mode="slide", crop_size=CROP, stride=(40, 40))
PROCESSOR = SegmentationProcessor(scale=(200, 64))  # keeps 64 x 100 images at their size


@pytest.fixture(scope="module")
def model():
    return balanced_upernet(PROCESSOR, scene(99, 64, 100))


@pytest.fixture(scope="module")
def reference(model):
    return SegmentationPredictor(model, PROCESSOR, settings=SLIDE)


@pytest.fixture(scope="module")
def graph(reference, tmp_path_factory):
    """A graph traced at the crop size, static (the fixed-size graph an older export may hold)."""
    spec = reference.export_graph()
    assert (spec.output_names, tuple(spec.example.shape)) == (("logits",), (1, 3, *CROP))
    path = tmp_path_factory.mktemp("seg_graph") / "model.onnx"
    return export_onnx(spec.module, path, spec.example, output_names=spec.output_names)


@pytest.fixture(scope="module")
def images():
    """Two (3, 64, 100) uint8 scenes: two sliding windows each."""
    return [scene(0, 64, 100), scene(1, 64, 100)]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_graph_runtimes_give_the_torch_logits_in_slide_mode(reference, graph, images, runtime):
    candidate = reference.with_backend(graph_backend(graph, runtime, "fp32"))
    batch = torch.stack(images)
    expected, got = reference.scores(batch), candidate.scores(batch)  # (2, 5, 64, 100)
    assert got.shape == expected.shape == (2, 5, 64, 100)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert candidate.info()["runtime"] == runtime and reference.info()["runtime"] == "torch"
    assert candidate.fingerprint() == reference.fingerprint()  # one model, whatever runs it


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_bf16_label_maps_agree_with_fp32_within_the_bounds(reference, graph, images, runtime):
    backend = (
        TorchBackend(DecodeLogits(reference.model), "bf16")
        if runtime == "torch"
        else graph_backend(graph, "openvino", "bf16")
    )
    figures = segmentation_agreement(reference, reference.with_backend(backend), images)
    bounds = {b.name: b for b in default_bounds("semantic_segmentation")}
    assert figures["images"] == 2
    assert bounds["pixel_agreement"].holds(figures["pixel_agreement"]), figures
    assert bounds["miou_vs_fp32"].holds(figures["miou_vs_fp32"]), figures


def test_the_agreement_check_sees_label_maps_that_differ(reference, model, images):
    (expected,) = reference.label_maps(images[0][None])
    counts = np.bincount(expected.ravel(), minlength=5) / expected.size
    assert (counts > 0.05).sum() >= 4  # the maps compared are not one class everywhere
    other = copy.deepcopy(model)
    with torch.no_grad():  # the second most frequent class wins a few more pixels
        other.decode_head.conv_seg.bias[int(np.argsort(counts)[-2])] += 0.5
    figures = segmentation_agreement(
        reference, SegmentationPredictor(other, PROCESSOR, settings=SLIDE), images
    )
    assert figures["pixel_agreement"] < 0.98 and figures["miou_vs_fp32"] < 0.95


def test_a_static_graph_refuses_whole_mode_and_other_crop_sizes(reference, graph, model):
    backend = graph_backend(graph, "onnxruntime", "fp32")
    with pytest.raises(ValueError, match="whole-image inference takes images of any size, but this"):
        SegmentationPredictor(model, PROCESSOR, backend=backend)
    other = InferenceSettings(mode="slide", crop_size=(48, 48), stride=(32, 32))
    with pytest.raises(ValueError, match=r"takes 64x64 inputs, but the sliding window's crops are 48x48"):
        SegmentationPredictor(model, PROCESSOR, settings=other, backend=backend)


def test_slide_mode_on_a_graph_runtime_takes_an_image_smaller_than_the_crop(reference, tmp_path):
    """mmseg cuts the crop to an image shorter than it (a panorama after the test resize): the predictor's
    own graph (what ``--runtime onnxruntime --mode slide`` traces) must take that smaller crop."""
    spec = reference.export_graph()
    path = export_onnx(
        spec.module, tmp_path / "model.onnx", spec.example, output_names=spec.output_names,
        dynamic_hw=spec.dynamic_hw,
    )  # fmt: skip
    candidate = reference.with_backend(graph_backend(path, "onnxruntime", "fp32"))
    batch = scene(2, 24, 300)[None]  # (1, 3, 24, 300): the view (16, 200) is shorter than the 64x64 crop
    torch.testing.assert_close(candidate.scores(batch), reference.scores(batch), atol=1e-4, rtol=0)

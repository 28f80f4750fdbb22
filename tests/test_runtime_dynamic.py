"""Graphs exported with dynamic height and width: traced at one size, run on ONNX Runtime and OpenVINO at
others (odd, not multiples of the patch or the window, wide, tall, shifts dropped or kept) within 1e-4 of
torch eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import swinkit
from swinkit.runtime.backends import OnnxRuntimeBackend, OpenVINOBackend
from swinkit.runtime.export import export_onnx, onnx_to_openvino
from swinkit.runtime.graph import TupleOutputs

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

# (H, W): the traced size, odd and non-multiple sizes (stages whose shift the size drops), wide and tall
SIZES = [(64, 64), (65, 97), (31, 33), (40, 200), (200, 40)]


def _runtimes(module: nn.Module, path: Path, names: tuple[str, ...]) -> list:
    """ONNX Runtime on the ONNX file, OpenVINO on the IR converted from it (``swinkit export --format openvino``)."""
    graph = export_onnx(module, path, torch.randn(1, 3, 64, 64), output_names=names, dynamic_hw=True)
    return [OnnxRuntimeBackend(graph), OpenVINOBackend(onnx_to_openvino(graph, path.with_suffix(".xml")))]


def _check(module: nn.Module, backends: list, sizes=SIZES) -> None:
    for height, width in sizes:
        pixels = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = module(pixels)
        for backend in backends:
            got = backend(pixels)
            got = got if isinstance(got, tuple) else (got,)
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(
                    g, e, atol=1e-4, rtol=0, msg=f"{backend.runtime} at {height}x{width}"
                )


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_a_classifier_traced_at_one_size_runs_at_any_size(name, tmp_path):
    torch.manual_seed(0)
    module = TupleOutputs(swinkit.create_model(name, num_classes=5).eval())
    _check(module, _runtimes(module, tmp_path / "m.onnx", ("logits",)))


class _Segmenter(nn.Module):
    """UPerNet up to its raw logits at the input size (the decode head's only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(pixel_values, auxiliary=False).logits,)


class _DetectorTrunk(nn.Module):
    """Mask R-CNN's backbone + FPN and the RPN head's convolutions: 5 levels, 5 score and 5 delta maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.extract_features(pixel_values)
        scores, deltas = self.model.rpn_head(features)
        return (*features, *scores, *deltas)


@pytest.mark.slow  # about 40 s on two busy cores: tracing, and OpenVINO compiling a dynamic graph
def test_upernet_traced_at_one_size_runs_at_any_size(tmp_path):
    from swinkit.models.segmentation.upernet import create_upernet

    torch.manual_seed(0)
    module = _Segmenter(create_upernet("upernet_swin_micro", num_classes=5).eval())
    _check(module, _runtimes(module, tmp_path / "m.onnx", ("logits",)))


@pytest.mark.slow  # about 35 s on two busy cores
def test_the_detector_backbone_fpn_and_rpn_convs_traced_at_one_size_run_at_any_size(tmp_path):
    from swinkit.models.detection.mask_rcnn import create_mask_rcnn

    torch.manual_seed(0)
    module = _DetectorTrunk(create_mask_rcnn("mask_rcnn_swin_micro").eval())
    names = tuple(f"{kind}{i}" for kind in ("fpn", "rpn_scores", "rpn_deltas") for i in range(5))
    _check(module, _runtimes(module, tmp_path / "m.onnx", names))


def test_openvino_compiles_no_graph_per_image_size_for_a_dynamic_size_graph(tmp_path):
    """A keep-ratio model (detection, whole-image segmentation) sees a new size with nearly every image: a
    static graph per size would stall each first call on a compile of seconds (Mask R-CNN Swin-T: 1.5-3 s)
    and hold every other call meanwhile, so the dynamic graph runs them all."""
    torch.manual_seed(0)
    module = TupleOutputs(swinkit.create_model("swin_micro", num_classes=5).eval())
    graph = export_onnx(module, tmp_path / "m.onnx", torch.randn(1, 3, 64, 64), dynamic_hw=True)
    backend = OpenVINOBackend(graph)
    _check(module, [backend], sizes=[(64, 64), (65, 97), (64, 64)])
    assert backend.compiled_shapes == []

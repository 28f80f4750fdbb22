"""ONNX export by tracing (torch.onnx.export, TorchScript exporter) and the exported graph run in onnxruntime."""

import io
import warnings

import pytest
import torch

import swinkit

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(model: torch.nn.Module, pixels: torch.Tensor, dynamic_batch: bool) -> bytes:
    buffer = io.BytesIO()
    axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(
            model,
            (pixels,),
            buffer,
            dynamo=False,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def _run(graph: bytes, pixels: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"pixel_values": pixels.numpy()})[0])


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_exported_model_matches_pytorch_for_any_batch_size(name):
    model = swinkit.create_model(name, num_classes=5).eval()
    graph = _export(model, torch.randn(1, 3, 64, 64), dynamic_batch=True)
    onnx.checker.check_model(onnx.load_from_string(graph))
    for batch in (1, 3):
        pixels = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(pixels)
        torch.testing.assert_close(_run(graph, pixels), expected, atol=1e-4, rtol=0)


def test_export_at_a_size_that_needs_padding():
    model = swinkit.create_model("swin_micro", num_classes=3).eval()
    pixels = torch.randn(2, 3, 50, 70)
    graph = _export(model, pixels, dynamic_batch=False)
    with torch.no_grad():
        expected = model(pixels)
    torch.testing.assert_close(_run(graph, pixels), expected, atol=1e-4, rtol=0)

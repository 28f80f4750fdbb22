"""Prepacked linear layers: the fp32 torch path's faster kernels give eager's outputs within 1e-5."""

import pytest
import torch
from torch import nn

from swinkit.models.factory import create_model
from swinkit.runtime.backends import TorchBackend
from swinkit.runtime.torch_speed import PrepackedLinear, prepack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return create_model("swin_micro", num_classes=10).eval()


def test_prepacked_classifier_matches_eager_at_every_batch_size():
    model = _classifier()
    packed = prepack_linears(model)
    assert not any(isinstance(m, nn.Linear) for m in packed.modules())
    assert any(isinstance(m, PrepackedLinear) for m in packed.modules())
    assert any(isinstance(m, nn.Linear) for m in model.modules())  # the argument is left alone
    with torch.inference_mode():
        for batch in (1, 3):
            pixels = torch.randn(batch, 3, 64, 64)
            torch.testing.assert_close(packed(pixels), model(pixels), atol=1e-5, rtol=0)


def test_torch_backend_prepacks_at_fp32_only():
    model = _classifier()
    pixels = torch.randn(2, 3, 64, 64)
    backend = TorchBackend(model, "fp32", prepack=True)
    torch.testing.assert_close(backend(pixels), TorchBackend(model)(pixels), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prepacked linear layers run fp32 weights; precision bf16"):
        TorchBackend(model, "bf16", prepack=True)
    with pytest.raises(ValueError, match="prepacked linear layers need an fp32 model on the CPU"):
        prepack_linears(model.to(torch.bfloat16))


def test_a_bf16_backend_built_under_inference_mode_runs():
    """Weights copied under inference_mode are inference tensors, which have no version counter: the
    attention's bias cache must key them without one."""
    model = _classifier()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        backend = TorchBackend(model, "bf16")
        first = backend(pixels)
        again = backend(pixels)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    torch.testing.assert_close(first, TorchBackend(model)(pixels), atol=0.2, rtol=0)

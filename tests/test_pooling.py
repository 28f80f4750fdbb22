"""The traceable adaptive average pooling (PSPNet's pyramid pooling in dynamic ONNX graphs) equals torch's."""

import pytest
import torch
import torch.nn.functional as F

from swinkit.layers.pooling import AdaptiveAvgPool2d, traceable_adaptive_avg_pool2d


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (13, 29), (16, 16), (64, 3)])
@pytest.mark.parametrize("output_size", [1, 2, 3, 6])
def test_the_traceable_pooling_equals_torch_adaptive_average_pooling(size, output_size):
    x = torch.randn(2, 4, *size, generator=torch.Generator().manual_seed(0))
    expected = F.adaptive_avg_pool2d(x, output_size)
    torch.testing.assert_close(traceable_adaptive_avg_pool2d(x, output_size), expected, atol=1e-6, rtol=0)


def test_the_module_traces_the_sizes_and_runs_torch_eager():
    pool = AdaptiveAvgPool2d(6)
    traced = torch.jit.trace(pool, torch.randn(1, 2, 12, 12))  # at 12 torch's kernel would fix a 2x2 window
    x = torch.randn(1, 2, 13, 29)
    torch.testing.assert_close(traced(x), F.adaptive_avg_pool2d(x, 6), atol=1e-6, rtol=0)
    assert torch.equal(pool(x), F.adaptive_avg_pool2d(x, 6))

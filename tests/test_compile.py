"""torch.compile of swinkit models matches eager; spatial sizes are specialised, the batch stays symbolic.

Inductor compiles are slow on a small CPU: one runs by default (the micro classifier, static shapes); the
dynamic-shape behaviour of every model is checked through Dynamo with the ``aot_eager`` backend (the same
graph capture and symbolic shapes, no code generation), and inductor on dynamic shapes in slow tests.
"""

import pytest
import torch
import torch._dynamo

from swinkit.models.factory import create_model
from swinkit.runtime.torch_speed import compile_network

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


# Two stages are every code path (window padding, the shifted block, patch merging) at half the trace time
TWO_STAGES = dict(depths=(2, 2), num_heads=(1, 2))


def _classifier(name: str = "swin_micro") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, **TWO_STAGES).eval()


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return list(output)
    return [value for value in vars(output).values() if isinstance(value, torch.Tensor)]


def test_compiled_classifier_matches_eager_static_shapes():
    model = _classifier()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixels)
        compiled = torch.compile(model, dynamic=False)(pixels)
    torch.testing.assert_close(compiled, expected, atol=1e-5, rtol=0)


def _models() -> dict[str, tuple[torch.nn.Module, tuple[int, int]]]:
    """Every kind of swinkit network and an image size (H, W) whose stage maps need window padding."""
    torch.manual_seed(0)
    return {
        "classifier v1": (create_model("swin_micro", num_classes=10, **TWO_STAGES).eval(), (60, 52)),
        "classifier v2": (create_model("swinv2_micro", num_classes=10, **TWO_STAGES).eval(), (60, 52)),
        "backbone": (create_model("swin_micro", backbone=True, **TWO_STAGES).eval(), (60, 52)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_every_model_traces_with_dynamic_shapes_in_one_graph_per_image_size(name):
    """dynamic=True used to trace the padding arithmetic symbolically (minutes for a micro model, one
    graph for every size); now each image size is specialised (a guard) and the batch stays symbolic."""
    model, (height, width) = _models()[name]
    compiled = torch.compile(model, dynamic=True, backend="aot_eager")
    with torch.no_grad():
        for shape in ((2, 3, 64, 64), (3, 3, 64, 64), (2, 3, height, width)):
            pixels = torch.randn(shape)
            for got, expected in zip(_tensors(compiled(pixels)), _tensors(model(pixels)), strict=True):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert _graphs() == 2  # batch 2 and 3 share the 64x64 graph
    assert not torch._dynamo.utils.counters["graph_break"]


@pytest.mark.slow
def test_inductor_with_dynamic_shapes_matches_eager():
    model = _classifier()
    compiled = torch.compile(model, dynamic=True)
    with torch.no_grad():
        for batch in (2, 3):
            pixels = torch.randn(batch, 3, 64, 64)
            torch.testing.assert_close(compiled(pixels), model(pixels), atol=1e-5, rtol=0)
    assert _graphs() == 1


@pytest.mark.slow
def test_compile_network_shares_one_graph_over_batch_sizes():
    model = _classifier("swinv2_micro")
    run = compile_network(model)
    with torch.no_grad():
        for batch in (2, 5, 3):
            pixels = torch.randn(batch, 3, 64, 64)
            torch.testing.assert_close(run(pixels), model(pixels), atol=1e-5, rtol=0)
    assert _graphs() == 1


def test_compile_network_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown torch.compile mode 'fastest'"):
        compile_network(torch.nn.Identity(), mode="fastest")

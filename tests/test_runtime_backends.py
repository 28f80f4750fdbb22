"""Backends: a fine-tuned classifier on every runtime x precision agrees with torch fp32 (fp32 runtimes to
1e-4 in the logits), and pairs a runtime cannot run are refused with a clear message."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch
from runtime_helpers import trained_classifier, write_images

from swinkit.data.decode import decode_image
from swinkit.inference import Predictor
from swinkit.runtime.backends import OpenVINOBackend, check_pair
from swinkit.runtime.exporter import ExportRequest, export_model

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model_dir():
    return trained_classifier()


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory):
    """The model exported once to ONNX (both runtimes read it), so each test does not trace it again."""
    destination = tmp_path_factory.mktemp("onnx") / "export"
    export_model(model_dir, destination, ExportRequest("onnx"))
    return destination


@pytest.fixture(scope="module")
def reference(model_dir):
    return Predictor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def held_out(reference, tmp_path_factory):
    """(30, 3, 32, 32) prepared images the model was not trained on."""
    items = write_images(tmp_path_factory.mktemp("held_out"), 30, seed=7)
    return torch.stack([reference.prepare(decode_image(path)) for path, _ in items])


def _top1_agreement(expected: torch.Tensor, got: torch.Tensor) -> float:
    return float((expected.argmax(-1) == got.argmax(-1)).float().mean())


def test_a_model_folder_is_traced_on_the_fly_for_a_graph_runtime(model_dir, reference, held_out):
    predictor = Predictor.from_pretrained(model_dir, runtime="openvino")
    with torch.inference_mode():
        expected = reference.model(held_out)
    torch.testing.assert_close(predictor.backend(held_out), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_runtimes_give_the_torch_logits(onnx_dir, reference, held_out, runtime):
    predictor = Predictor.from_pretrained(onnx_dir, runtime=runtime)
    assert predictor.info()["runtime"] == runtime and predictor.info()["precision"] == "fp32"
    with torch.inference_mode():
        expected = reference.model(held_out)
    got = predictor.backend(held_out)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert _top1_agreement(expected, got) == 1.0
    for size in (1, 6):  # the dynamic batch axis, after a run at another size
        torch.testing.assert_close(predictor.backend(held_out[:size]), expected[:size], atol=1e-4, rtol=0)


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_bf16_agrees_with_fp32(onnx_dir, reference, held_out, runtime):
    predictor = Predictor.from_pretrained(onnx_dir, runtime=runtime, precision="bf16")
    assert predictor.info()["precision"] == "bf16"
    expected, got = reference.predict_pixels(held_out), predictor.predict_pixels(held_out)
    assert not torch.equal(expected, got)  # it really ran at bf16
    assert _top1_agreement(expected, got) >= 0.99
    assert float((expected - got).abs().max()) < 0.05


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_graph_refuses_images_of_another_size_than_it_was_traced_at(onnx_dir, runtime):
    predictor = Predictor.from_pretrained(onnx_dir, runtime=runtime)
    with pytest.raises(ValueError, match="the exported graph takes 32x32 images, not 48x32"):
        predictor.backend(torch.zeros(1, 3, 48, 32))


def test_openvino_throughput_hint_splits_a_batch_over_requests(onnx_dir, reference, held_out):
    predictor = Predictor.from_pretrained(onnx_dir, runtime="openvino")
    predictor.backend.set_hint("THROUGHPUT")
    with torch.inference_mode():
        expected = reference.model(held_out[:5])
    torch.testing.assert_close(predictor.backend(held_out[:5]), expected, atol=1e-4, rtol=0)


def test_openvino_runs_each_batch_shape_on_a_static_graph_then_falls_back_to_the_dynamic(
    onnx_dir, reference, held_out
):
    backend = OpenVINOBackend(onnx_dir / "model.onnx", "fp32", static_shapes=2)
    with torch.inference_mode():
        expected = reference.model(held_out)
    for size in (1, 4, 1, 6):  # the third call reuses batch 1's graph; batch 6 is past the limit
        torch.testing.assert_close(backend(held_out[:size]), expected[:size], atol=1e-4, rtol=0)
    assert backend.compiled_shapes == [(1, 3, 32, 32), (4, 3, 32, 32)]


@pytest.mark.parametrize(
    ("precision", "inference", "snippets"),
    [("fp32", "f32", False), ("bf16", "bf16", True), ("int8", "bf16", True)],
)
def test_openvino_static_graphs_fuse_snippets_except_at_fp32(
    onnx_dir, held_out, precision, inference, snippets
):
    # fp32 static graphs run without the plugin's fused snippets (they cost swin_micro 8e-3 in the logits);
    # bf16 and int8 keep them, and int8 runs its float ops in bf16
    graph = onnx_dir / "model.onnx"  # an fp32 graph: its int8 run still says which properties int8 asks for
    backend = OpenVINOBackend(graph, precision)
    backend(held_out[:2])
    compiled = backend.static[(2, 3, 32, 32)]
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == inference
    layers = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()]
    assert ("Subgraph" in layers) == snippets  # a snippet runs as a "Subgraph" layer


def test_openvino_calls_from_several_threads_run_on_their_own_requests(onnx_dir, reference, held_out):
    backend = OpenVINOBackend(onnx_dir / "model.onnx", "fp32", hint="THROUGHPUT")
    with torch.inference_mode():
        expected = reference.model(held_out)
    slices = [slice(0, 4), slice(4, 9), slice(9, 10), slice(10, 30)] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        outputs = list(pool.map(lambda part: backend(held_out[part]), slices))
    for part, got in zip(slices, outputs, strict=True):
        torch.testing.assert_close(got, expected[part], atol=1e-4, rtol=0)
    assert 1 < backend.idle.qsize() <= 3  # calls overlapped, each on a request set of its own


@pytest.mark.parametrize(
    ("runtime", "precision", "message"),
    [
        ("onnxruntime", "bf16", "runtime onnxruntime has no bf16 inference; bf16 runs on torch or openvino"),
        ("torch", "int8", "runtime torch has no int8 inference; int8 runs on openvino or onnxruntime"),
        ("tensorrt", "fp32", "unknown runtime 'tensorrt'"),
        ("torch", "fp16", "unknown precision 'fp16'"),
    ],
)
def test_pairs_a_runtime_cannot_run_are_refused(runtime, precision, message):
    with pytest.raises(ValueError, match=message):
        check_pair(runtime, precision)


def test_int8_and_gpu_requests_without_an_export_are_refused(model_dir):
    with pytest.raises(ValueError, match="int8 needs a calibrated export: swinkit export"):
        Predictor.from_pretrained(model_dir, runtime="openvino", precision="int8")
    with pytest.raises(ValueError, match="runtime onnxruntime runs on the CPU, not cuda"):
        Predictor.from_pretrained(model_dir, runtime="onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="runtime onnxruntime has no bf16"):
        Predictor.from_pretrained(model_dir, runtime="onnxruntime", precision="bf16")


class _FakeRequest:
    """An infer request as OpenVINO's behaves: starting one that still runs raises; ``wait`` may fail."""

    def __init__(self, fail_wait: bool) -> None:
        self.busy, self.fail_wait = False, fail_wait
        self.output_tensors: list = []

    def start_async(self, inputs: dict, share_inputs: bool) -> None:
        if self.busy:
            raise RuntimeError("Infer Request is busy")
        self.busy, self.output_tensors = True, [SimpleNamespace(data=inputs[0][:, :1, 0, 0])]

    def wait(self) -> None:
        self.busy = False
        if self.fail_wait:
            self.fail_wait = False
            raise RuntimeError("inference failed")


def test_an_openvino_call_that_fails_leaves_no_request_running_for_the_next_call():
    """A failed wait on one chunk must not hand the next call a request the other chunk still runs."""
    requests = iter([_FakeRequest(fail_wait=True), _FakeRequest(fail_wait=False)])
    backend = OpenVINOBackend.__new__(OpenVINOBackend)
    backend.size, backend.request_count, backend.static_shapes = None, 2, 0
    backend.lock, backend.static, backend.idle = threading.Lock(), {}, queue.SimpleQueue()
    backend.compiled = SimpleNamespace(create_infer_request=lambda: next(requests))
    pixels = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    with pytest.raises(RuntimeError, match="inference failed"):
        backend(pixels)
    torch.testing.assert_close(backend(pixels), torch.arange(4.0).view(4, 1))


def test_openvino_background_compiles_run_the_dynamic_graph_until_the_static_one_is_ready(
    onnx_dir, reference, held_out
):
    backend = OpenVINOBackend(onnx_dir / "model.onnx", "fp32", static_shapes=2)
    backend.compile_in_background = True
    with torch.inference_mode():
        expected = reference.model(held_out)
    for size in (3, 3, 5, 7):  # batch 7 is past the limit of two, counting the ones still compiling
        torch.testing.assert_close(backend(held_out[:size]), expected[:size], atol=1e-4, rtol=0)
    backend.wait_compiled()
    assert sorted(backend.compiled_shapes) == [(3, 3, 32, 32), (5, 3, 32, 32)]
    assert backend._graph_for((3, 3, 32, 32)) is not backend.compiled
    torch.testing.assert_close(backend(held_out[:3]), expected[:3], atol=1e-4, rtol=0)


def test_a_failed_background_compile_is_logged_and_its_shape_stays_on_the_dynamic_graph(
    onnx_dir, reference, held_out, monkeypatch, caplog
):
    backend = OpenVINOBackend(onnx_dir / "model.onnx", "fp32")
    backend.compile_in_background = True

    def refuse(shape):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backend, "_compile_static", refuse)
    with torch.inference_mode():
        expected = reference.model(held_out[:4])
    with caplog.at_level("WARNING", logger="swinkit.runtime.backends"):
        torch.testing.assert_close(backend(held_out[:4]), expected, atol=1e-4, rtol=0)
        backend.wait_compiled()
    assert backend.failed == {(4, 3, 32, 32)} and backend.compiled_shapes == []
    assert "could not compile a static graph for (4, 3, 32, 32) (out of memory)" in caplog.text
    torch.testing.assert_close(backend(held_out[:4]), expected, atol=1e-4, rtol=0)  # dynamic, no retry


def test_a_served_openvino_backend_compiles_new_batch_sizes_in_the_background(onnx_dir):
    from swinkit.serve.service import TaskService

    service = TaskService.load(str(onnx_dir), runtime="openvino", precision="fp32", openvino_hint="LATENCY")
    assert service.predictor.backend.compile_in_background is True


class _HintSwitchedMidCall(OpenVINOBackend):
    """Runs ``set_hint("LATENCY")`` the first time a call reads the idle request sets once ``armed``: another
    thread switching the hint in the middle of a call, at the worst moment."""

    armed = False

    @property
    def idle(self) -> queue.SimpleQueue:
        if self.armed:
            self.armed = False
            self.set_hint("LATENCY")
        return self._idle

    @idle.setter
    def idle(self, value: queue.SimpleQueue) -> None:
        self._idle = value


def test_a_hint_switched_during_a_call_leaves_it_as_many_requests_as_chunks(onnx_dir, reference, held_out):
    backend = _HintSwitchedMidCall(onnx_dir / "model.onnx", "fp32", static_shapes=0)
    backend.request_count, backend.armed = 2, True  # as under THROUGHPUT with two requests
    with torch.inference_mode():
        expected = reference.model(held_out[:4])
    torch.testing.assert_close(backend(held_out[:4]), expected, atol=1e-4, rtol=0)
    assert backend.request_count == 1 and not backend.armed


def test_prepack_with_an_export_folder_asks_for_the_torch_runtime(onnx_dir):
    with pytest.raises(
        ValueError, match="is an export folder, which runs its onnx graph; .* add --runtime torch"
    ):
        Predictor.from_pretrained(onnx_dir, prepack=True)
    assert Predictor.from_pretrained(onnx_dir, runtime="torch", prepack=True).backend.runtime == "torch"

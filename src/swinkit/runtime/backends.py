"""Backends: the network of a predictor as a callable (B, 3, H, W) float32 pixels -> raw outputs.

``TorchBackend`` runs the ``nn.Module`` (fp32, or bf16 weights); ``OnnxRuntimeBackend`` an ONNX graph on
ONNX Runtime's CPU provider (fp32, or an int8 QDQ graph); ``OpenVINOBackend`` an ONNX file or OpenVINO IR
compiled for the CPU (fp32 or bf16 through the inference precision hint, or an NNCF int8 IR). Every backend
returns float32 CPU tensors (the device's for torch): one tensor for a graph with one output, else a tuple in
the graph's output order. Which runtime runs which precision is ``SUPPORTED``; any other pair is refused.

Threads: ONNX Runtime and OpenVINO take ``torch.get_num_threads()`` intra-op threads (``swinkit serve
--torch-threads`` sets it), so all runtimes use the cores the same way.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from swinkit.runtime.openvino_core import openvino_core
from swinkit.runtime.torch_speed import prepack_linears

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8")
SUPPORTED = {"torch": ("fp32", "bf16"), "openvino": ("fp32", "bf16", "int8"), "onnxruntime": ("fp32", "int8")}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


class Backend(Protocol):
    """A network on one runtime at one precision: (B, 3, H, W) float32 pixels -> raw outputs."""

    runtime: str
    precision: str

    def __call__(self, pixels: torch.Tensor) -> Outputs: ...


def backend_info(backend: Backend) -> dict[str, Any]:
    """What every predictor's ``info()`` (``GET /info``) says of its backend: runtime, precision and whether
    the torch path runs prepacked linear layers (``--torch-prepack``)."""
    return {
        "runtime": backend.runtime,
        "precision": backend.precision,
        "torch_prepack": bool(getattr(backend, "prepacked", False)),
    }


def check_pair(runtime: str, precision: str) -> None:
    """ValueError unless ``runtime`` runs ``precision`` (``SUPPORTED``)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in SUPPORTED[runtime]:
        runs = [name for name, precisions in SUPPORTED.items() if precision in precisions]
        raise ValueError(
            f"runtime {runtime} has no {precision} inference; {precision} runs on {' or '.join(runs)}"
        )


def _as_outputs(arrays: Sequence[np.ndarray]) -> Outputs:
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays)
    return tensors[0] if len(tensors) == 1 else tensors


def check_size(pixels: torch.Tensor, size: tuple[int, int] | None) -> None:
    """ValueError when (B, 3, H, W) ``pixels`` are not of the graph's traced (H, W) (None: any size)."""
    if size is not None and tuple(pixels.shape[2:]) != size:
        raise ValueError(
            f"the exported graph takes {size[0]}x{size[1]} images, not {pixels.shape[2]}x{pixels.shape[3]}: "
            "its height and width were fixed when it was traced"
        )


def _static_size(dims: Sequence[Any]) -> tuple[int, int] | None:
    height, width = dims[2:]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _float_outputs(out: Any) -> Outputs:
    if isinstance(out, torch.Tensor):
        return out.float()
    return tuple(t.float() for t in out)


class TorchBackend:
    """The ``nn.Module`` itself: fp32, or bf16 (a bf16 copy of the weights; inputs cast to bf16).

    bf16 weights rather than autocast: on this project's reference CPU (AVX512_BF16) Swin-T 224 ran at
    34.4 / 38.0 img/s (batch 1 / 8) with bf16 weights against 32.7 / 28.7 with CPU autocast (issue 14).
    """

    runtime = "torch"

    def __init__(self, model: nn.Module, precision: str = "fp32", *, prepack: bool = False) -> None:
        """``prepack``: at fp32, run a copy whose linear layers hold oneDNN-reordered weights
        (``torch_speed.prepack_linears``: 1.17-1.29x at batch 1 for Swin-T 224, logits within 1e-6); the copy
        does not follow later changes to ``model``'s weights."""
        check_pair("torch", precision)
        if prepack and precision != "fp32":
            raise ValueError(f"prepacked linear layers run fp32 weights; precision {precision} has its own")
        self.precision, self.prepacked = precision, prepack
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if precision == "bf16":
            self.model = copy.deepcopy(model).to(self.dtype)
        else:
            self.model = prepack_linears(model) if prepack else model

    def __call__(self, pixels: torch.Tensor) -> Outputs:
        with torch.inference_mode():
            return _float_outputs(self.model(pixels.to(self.dtype)))


class OnnxRuntimeBackend:
    """An ONNX graph (a file, or its bytes) on ONNX Runtime's CPU execution provider."""

    runtime = "onnxruntime"

    def __init__(self, graph: str | os.PathLike | bytes, precision: str = "fp32", threads: int | None = None):
        import onnxruntime as ort

        check_pair("onnxruntime", precision)
        self.precision = precision
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = graph if isinstance(graph, bytes) else str(graph)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.size = _static_size(self.session.get_inputs()[0].shape)

    def __call__(self, pixels: torch.Tensor) -> Outputs:
        check_size(pixels, self.size)
        array = pixels.detach().to("cpu", torch.float32).numpy()
        return _as_outputs(self.session.run(None, {self.input_name: array}))


def openvino_config(precision: str, hint: str, threads: int | None) -> dict[str, Any]:
    """The CPU plugin properties: inference precision (bf16 / f32), performance hint and thread count.

    An int8 IR runs its quantized ops in int8 and bf16 elsewhere (the window attention, LayerNorm, GELU):
    with ``quantize``'s recipe that was faster than f32 elsewhere (Swin-T 224 batch 1, alternating in one
    process: 1.06x with the static graphs' snippets off, 1.10x with them on, two runs), and the int8 check
    measures the result.
    """
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    if hint not in PERFORMANCE_HINTS:
        raise ValueError(
            f"unknown OpenVINO performance hint {hint!r}; choose {' or '.join(PERFORMANCE_HINTS)}"
        )
    return {
        hints.inference_precision: ov.Type.f32 if precision == "fp32" else ov.Type.bf16,
        hints.performance_mode: getattr(hints.PerformanceMode, hint),
        props.inference_num_threads: threads or torch.get_num_threads(),
    }


STATIC_SHAPES = 8  # distinct input shapes an OpenVINOBackend compiles a static graph for
FP32_STATIC_CONFIG = {"SNIPPETS_MODE": "DISABLE"}  # see OpenVINOBackend: static fused subgraphs lose accuracy


class OpenVINOBackend:
    """An ONNX file or OpenVINO IR (.xml) compiled for the CPU plugin.

    A batch is split over the infer requests (one with the LATENCY hint; with THROUGHPUT, one per stream,
    running at once through OpenVINO's async API, which is what raises a server's throughput). Each chunk
    runs on a graph compiled for its exact shape: the exported graph's batch axis is dynamic, and the CPU
    plugin runs a dynamic graph with per-call shape inference and fewer fused kernels (Swin-T 224 bf16:
    static 1.15x faster at batch 1, 1.1-1.25x at batch 8 over two requests, measured alternating in one
    process, docs/design.md). The first call at a new shape compiles it (about 3 s for Swin-T); past
    ``static_shapes`` distinct shapes the dynamic graph runs the rest. A graph with dynamic height and width
    (detection, segmentation) always runs dynamic: nearly every image is a new size, and each compile (1.5-3 s
    for Mask R-CNN Swin-T at 608x800) would stall its call and every other. Static graphs are compiled without
    the plugin's fused "snippets" subgraphs at fp32 (``FP32_STATIC_CONFIG``): with them, OpenVINO 2026.4
    gave swin_micro at 32 px (stage windows 2 and 1) fp32 logits up to 8e-3 off the dynamic graph's and
    torch's, past fp32's 1e-4. bf16 and int8 keep them: that error is inside their own, and the fused
    attention kernels were 1.07x (bf16) and 1.16x (int8) faster at Swin-T 224 batch 1 (batch 8: 0.93x and
    1.06x, within noise; docs/design.md).
    """

    runtime = "openvino"

    def __init__(
        self,
        graph: str | os.PathLike,
        precision: str = "fp32",
        *,
        hint: str = "LATENCY",
        threads: int | None = None,
        static_shapes: int = STATIC_SHAPES,
    ) -> None:
        check_pair("openvino", precision)
        self.precision, self.threads, self.static_shapes = precision, threads, static_shapes
        self.core = openvino_core()
        self.model = self.core.read_model(str(graph))
        shape = self.model.input(0).get_partial_shape()
        self.size = _static_size([d.get_length() if d.is_static else None for d in shape])
        self.lock = threading.Lock()  # guards compiling and the table of compiled graphs
        # a new shape's static graph compiled in a thread while the dynamic graph runs its calls (serve sets it:
        # no request waits seconds for a compile); by default the first call at a shape compiles it
        self.compile_in_background = False
        self.set_hint(hint)

    def set_hint(self, hint: str) -> None:
        """Compile for the performance hint ``hint``: LATENCY (one request) or THROUGHPUT (several)."""
        config = openvino_config(self.precision, hint, self.threads)
        with self.lock:
            self.hint, self.config = hint, config
            self.compiled = self.core.compile_model(self.model, "CPU", config)
            count = 1 if hint == "LATENCY" else self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self.request_count = max(1, int(count))
            self.static: dict[tuple[int, ...], Any] = {}  # input shape -> the graph compiled for it
            self.pending: set[tuple[int, ...]] = set()  # shapes compiling in the background
            self.failed: set[tuple[int, ...]] = set()  # shapes whose background compile raised: dynamic
            self.idle: queue.SimpleQueue[_RequestSet] = queue.SimpleQueue()

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes a static graph has been compiled for, in order of first use."""
        return list(self.static)

    def _graph_for(self, shape: tuple[int, ...]) -> Any:
        """The graph compiled for ``shape`` (compiled now if new, or in the background with
        ``compile_in_background``, the dynamic graph running the calls until it is ready), or the dynamic one
        past the limit or when the graph's height and width are dynamic (a keep-ratio model's every image is a
        new size)."""
        if self.size is None:
            return self.compiled
        with self.lock:
            if shape in self.static:
                return self.static[shape]
            if shape in self.pending or shape in self.failed:
                return self.compiled
            if len(self.static) + len(self.pending) >= self.static_shapes:
                return self.compiled
            if self.compile_in_background:
                self.pending.add(shape)
                threading.Thread(
                    target=self._compile_later,
                    args=(shape, self.static),
                    name="swinkit-ov-compile",
                    daemon=True,
                ).start()
                return self.compiled
            self.static[shape] = self._compile_static(shape)
            return self.static[shape]

    def _compile_static(self, shape: tuple[int, ...]) -> Any:
        model = self.model.clone()
        model.reshape(list(shape))
        extra = FP32_STATIC_CONFIG if self.precision == "fp32" else {}
        return self.core.compile_model(model, "CPU", {**self.config, **extra})

    def _compile_later(self, shape: tuple[int, ...], table: dict[tuple[int, ...], Any]) -> None:
        """Compile ``shape`` and add it to ``table`` unless ``set_hint`` replaced the table meanwhile."""
        try:
            graph = self._compile_static(shape)
        except Exception as error:  # noqa: BLE001 - the dynamic graph keeps running that shape
            log.warning(
                "OpenVINO could not compile a static graph for %s (%s); the dynamic graph runs it",
                shape,
                error,
            )
            graph = None
        with self.lock:
            if table is self.static:
                self.pending.discard(shape)
                if graph is None:
                    self.failed.add(shape)
                else:
                    table[shape] = graph

    def wait_compiled(self, timeout: float = 120.0) -> None:
        """Wait until no background compile is running (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if not self.pending:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"OpenVINO still compiling {sorted(self.pending)} after {timeout} s")
            time.sleep(0.02)

    def __call__(self, pixels: torch.Tensor) -> Outputs:
        """Calls from several threads run at once, each on its own infer requests (the plugin's streams
        take them in parallel under the THROUGHPUT hint)."""
        check_size(pixels, self.size)
        array = np.ascontiguousarray(pixels.detach().to("cpu", torch.float32).numpy())
        idle = self.idle
        try:
            requests = idle.get_nowait()
        except queue.Empty:
            requests = _RequestSet(self.request_count)
        # split by the set's own count: a set_hint meanwhile may have changed self.request_count
        size = math.ceil(array.shape[0] / requests.count)
        chunks = [array[i : i + size] for i in range(0, array.shape[0], size)]
        started: list[Any] = []
        try:
            running = [requests.take(self._graph_for(chunk.shape)) for chunk in chunks]
            for request, chunk in zip(running, chunks, strict=True):
                request.start_async({0: chunk}, share_inputs=True)  # ``array`` outlives the wait below
                started.append(request)
            parts = []
            for request in running:
                request.wait()
                parts.append([np.copy(t.data) for t in request.output_tensors])
        finally:
            _finish(started)  # after a failure the other chunks may still run: the next call reuses them
            requests.release()
            idle.put(requests)
        if len(parts) == 1:
            return _as_outputs(parts[0])
        return _as_outputs([np.concatenate(arrays) for arrays in zip(*parts, strict=True)])


def _finish(requests: Sequence[Any]) -> None:
    """Wait until none of ``requests`` runs any more, whatever their inference's outcome."""
    for request in requests:
        try:
            request.wait()
        except Exception:  # noqa: BLE001 - the call's own error is the one raised; this only drains
            continue


class _RequestSet:
    """One caller's infer requests: ``count`` per compiled graph, created on first use, handed out in turn."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.requests: dict[int, tuple[Any, list[Any]]] = {}  # id(graph) -> (graph, its requests)
        self.used: dict[int, int] = {}

    def take(self, graph: Any) -> Any:
        """The next unused request of ``graph`` in this call (a call has at most ``count`` chunks)."""
        key = id(graph)
        if key not in self.requests:
            self.requests[key] = (graph, [graph.create_infer_request() for _ in range(self.count)])
        index = self.used.get(key, 0)
        self.used[key] = index + 1
        return self.requests[key][1][index]

    def release(self) -> None:
        self.used.clear()


def graph_backend(graph: Path, runtime: str, precision: str, *, hint: str = "LATENCY") -> Backend:
    """The backend running the exported ``graph`` (.onnx or .xml) on ``runtime`` at ``precision``."""
    check_pair(runtime, precision)
    if runtime == "onnxruntime":
        if graph.suffix != ".onnx":
            raise ValueError(
                f"{graph} is an OpenVINO IR; ONNX Runtime runs ONNX files: use --runtime openvino"
            )
        return OnnxRuntimeBackend(graph, precision)
    if runtime == "openvino":
        return OpenVINOBackend(graph, precision, hint=hint)
    raise ValueError(f"an exported graph runs on openvino or onnxruntime, not {runtime}")

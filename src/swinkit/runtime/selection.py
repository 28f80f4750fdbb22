"""Which backend a predictor runs: from the runtime and precision asked for and what the source holds.

An export folder (``export.json``) runs its graph, by default on its format's runtime at its precision;
``runtime="torch"`` runs the weights saved beside it instead. Any other source runs on torch by default;
asked for openvino or onnxruntime it is traced to ONNX on the fly (``swinkit export`` once is faster to
load). int8 needs a calibrated export. A stale export is refused before anything runs. ``prepack`` (torch
fp32 on the CPU only) runs a copy of the network with oneDNN-prepacked linear layers
(``torch_speed.prepack_linears``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from swinkit.runtime.backends import Backend, TorchBackend, check_pair, graph_backend
from swinkit.runtime.export import ExportInfo, check_fresh, export_onnx, is_export, read_export
from swinkit.runtime.graph import GraphSpec


def runs_own_module(runtime: str | None, precision: str | None, source: str | Path, prepack: bool) -> bool:
    """Whether a predictor runs its own module as it is (torch fp32, no prepacking, not an export folder),
    so it needs no ``backend_for``."""
    return (
        not prepack and runtime in (None, "torch") and precision in (None, "fp32") and not is_export(source)
    )


def check_device(runtime: str | None, device: str) -> None:
    """ValueError when ``runtime`` (openvino, onnxruntime) cannot run on ``device``."""
    if runtime not in (None, "torch") and torch.device(device).type != "cpu":
        raise ValueError(f"runtime {runtime} runs on the CPU, not {device}; use --runtime torch for {device}")


def _check_graph_precision(folder: Path, info: ExportInfo, precision: str) -> None:
    if info.precision == "int8" and precision != "int8":
        raise ValueError(
            f"{folder} holds an int8 graph, which runs only at int8; export the model again for {precision}"
        )
    if precision == "int8" and info.precision != "int8":
        raise ValueError(
            f"{folder} holds a {info.precision} graph; int8 needs a calibrated export: "
            "swinkit export SRC DST --precision int8 --calibration-data DIR"
        )


def exported_backend(
    folder: Path, info: ExportInfo, runtime: str | None, precision: str | None, hint: str
) -> Backend | None:
    """The backend of an export folder's graph, or None when ``runtime`` is torch (the saved weights run)."""
    runtime = runtime or info.runtime
    precision = precision or (info.precision if runtime != "torch" or info.precision != "int8" else "fp32")
    check_pair(runtime, precision)
    if runtime == "torch":
        return None
    _check_graph_precision(folder, info, precision)
    return graph_backend(folder / info.graph_file, runtime, precision, hint=hint)


def traced_backend(spec: GraphSpec, runtime: str, precision: str, hint: str) -> Backend:
    """The predictor's graph (``GraphSpec``) traced to a temporary ONNX file and loaded on ``runtime``."""
    if precision == "int8":
        raise ValueError(
            "int8 needs a calibrated export: swinkit export SRC DST --precision int8 --calibration-data DIR, "
            "then load DST"
        )
    with tempfile.TemporaryDirectory(prefix="swinkit-onnx-") as folder:
        graph = export_onnx(
            spec.module, Path(folder) / "model.onnx", spec.example, output_names=spec.output_names,
            dynamic_hw=spec.dynamic_hw,
        )  # fmt: skip
        return graph_backend(graph, runtime, precision, hint=hint)


def backend_for(
    model: nn.Module,
    source: Path,
    fingerprint: str,
    graph: Callable[[], GraphSpec],
    *,
    runtime: str | None = None,
    precision: str | None = None,
    device: str = "cpu",
    hint: str = "LATENCY",
    prepack: bool = False,
) -> Backend:
    """The backend for ``model`` loaded from ``source`` (its ``model_fingerprint`` is ``fingerprint``).

    ``graph`` is the predictor's ``export_graph`` (``swinkit.runtime.graph``), called only when the model is
    traced on the fly; torch runs ``model`` itself (``prepack``: a copy with oneDNN-prepacked linear layers, fp32
    on the CPU only). ``hint`` is OpenVINO's performance hint.
    """
    info = read_export(source) if source.is_dir() else None
    if info is not None:
        check_fresh(source, info, fingerprint)
        if prepack and runtime is None:  # refused before its graph is compiled, naming the real cause
            raise ValueError(
                f"{source} is an export folder, which runs its {info.format} graph; prepacked linear layers "
                "(--torch-prepack) run the torch weights saved beside it: add --runtime torch"
            )
        _check_prepack(prepack, runtime or "torch", device)  # before a graph compiles
        backend = exported_backend(source, info, runtime, precision, hint)
        if backend is not None:
            check_device(backend.runtime, device)
            return backend
        runtime = "torch"
    runtime, precision = runtime or "torch", precision or "fp32"
    check_pair(runtime, precision)
    check_device(runtime, device)
    _check_prepack(prepack, runtime, device)
    if runtime == "torch":
        return TorchBackend(model, precision, prepack=prepack)
    return traced_backend(graph(), runtime, precision, hint)


def _check_prepack(prepack: bool, runtime: str, device: str) -> None:
    if prepack and runtime != "torch":
        raise ValueError(
            f"prepacked linear layers (--torch-prepack) are a torch option, not one of {runtime}"
        )
    if prepack and torch.device(device).type != "cpu":
        raise ValueError(f"prepacked linear layers (--torch-prepack) run on the CPU, not {device}")

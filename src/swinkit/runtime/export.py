"""Exported graphs: ONNX by tracing, OpenVINO IR converted from it, and the ``export.json`` beside them.

An export folder holds the saved model it was made from (config.json, preprocessor_config.json with the
labels in config.json, the weights) plus the graph (``model.onnx``, or ``model.xml`` + ``model.bin``) and
``export.json``: format, precision, opset, source, the weights' fingerprint (``model_fingerprint``) and, for
int8, the agreement with fp32 measured when it was written. Loading checks the fingerprint against the
folder's weights, so a folder whose weights changed after the export (a stale graph) is refused.

ONNX: opset ``OPSET`` (17: LayerNormalization is one op), TorchScript tracing exporter, input
``pixel_values`` (B, 3, H, W) with a dynamic batch axis and, with ``dynamic_hw``, dynamic height and width:
the Swin trunk, UPerNet and the FPN keep sizes as traced values under the tracer (``swinkit.layers.window
.static_size``), so a graph traced at one size runs at any other (odd sizes, non-multiples of the patch and
window, wide and tall; tested within 1e-4 of torch eager on ONNX Runtime 1.32 and OpenVINO 2026.4). What a
task exports is its predictor's ``GraphSpec`` (``swinkit.runtime.graph``); the graph ends at the network's raw
outputs.

Static or dynamic: classifiers whose preprocessing makes one size export a static graph. Swin-T 224,
OpenVINO fp32, 2 threads, alternating in one process on a machine at load 8 on 2 cores: dynamic / static
time 1.01-1.07 (batch 1) and 0.94 (batch 8), ONNX Runtime 0.97 (batch 1); with about 10% noise no penalty was
shown either way, so the static graph (which OpenVINO folds to exactly the old constant-shape graph) stays
the default.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swinkit.checkpoint_io import atomic_write_json

OPSET = 17
EXPORT_FILE = "export.json"
GRAPH_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
FORMATS = tuple(GRAPH_FILES)
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}  # what loads an export by default
INPUT_NAME = "pixel_values"


@dataclass(frozen=True)
class ExportInfo:
    """What ``export.json`` records about an exported graph."""

    format: str  # onnx | openvino
    precision: str  # fp32 | bf16 | int8: the graph's (int8) or the default inference precision
    opset: int  # the ONNX opset traced (the IR is converted from that ONNX graph)
    source: str  # the model exported, as given to swinkit export
    fingerprint: str  # model_fingerprint of the weights saved beside the graph
    config_hash: str
    input_shape: list[int]  # the (1, 3, H, W) example traced: the graph takes (B, 3, H, W)
    output_names: list[str] = field(default_factory=lambda: ["logits"])  # the graph's outputs, in order
    dynamic_hw: bool = False  # height and width are dynamic axes (else fixed at input_shape's)
    agreement: dict[str, Any] | None = None  # the int8 check's figures (swinkit.runtime.quantize)

    @property
    def graph_file(self) -> str:
        return GRAPH_FILES[self.format]

    @property
    def runtime(self) -> str:
        return DEFAULT_RUNTIME[self.format]


def read_export(folder: Path) -> ExportInfo | None:
    """The folder's ``export.json``, or None when it is not an export folder."""
    path = folder / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = ExportInfo(**data)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path} is not a swinkit export description ({e})") from None
    if info.format not in FORMATS:
        raise ValueError(f"{path} names format {info.format!r}; swinkit reads {' and '.join(FORMATS)}")
    if not (folder / info.graph_file).is_file():
        raise FileNotFoundError(f"{folder} has {EXPORT_FILE} but not the graph it names, {info.graph_file}")
    return info


def write_export(folder: Path, info: ExportInfo) -> None:
    atomic_write_json(folder / EXPORT_FILE, asdict(info))


def check_fresh(folder: Path, info: ExportInfo, fingerprint: str) -> None:
    """ValueError when the folder's weights are not those the graph was exported from."""
    if fingerprint != info.fingerprint:
        raise ValueError(
            f"{folder} is a stale export: its weights changed after {info.graph_file} was written "
            f"(fingerprint {fingerprint}, the export recorded {info.fingerprint}); export the model again"
        )


def _dynamic_axes(
    module: nn.Module, example: torch.Tensor, output_names: Sequence[str], dynamic_hw: bool
) -> dict[str, dict[int, str]]:
    """``torch.onnx.export``'s dynamic axes: the batch everywhere; with ``dynamic_hw`` also the input's H and
    W and the two trailing axes of every rank-4 output (feature maps follow the input's size)."""
    if not dynamic_hw:
        return {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    with torch.no_grad():
        ranks = [out.ndim for out in module(example)]
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    for name, rank in zip(output_names, ranks, strict=True):
        axes[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} if rank == 4 else {0: "batch"}
    return axes


def export_onnx(
    module: nn.Module,
    path: Path,
    example: torch.Tensor,
    *,
    output_names: Sequence[str] = ("logits",),
    dynamic_hw: bool = False,
    opset: int = OPSET,
) -> Path:
    """``module`` traced on ``example`` (1, 3, H, W) into the ONNX file ``path``, with a dynamic batch axis
    and, with ``dynamic_hw``, dynamic height and width (the graph then runs at any input size)."""
    module = module.eval()
    axes = _dynamic_axes(module, example, output_names, dynamic_hw)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=axes,
        )
    return path


def onnx_to_openvino(onnx_path: Path, xml_path: Path, *, ov_model: Any = None) -> Path:
    """The ONNX file (or an already converted ``ov_model``) as OpenVINO IR, weights kept at fp32.

    The ONNX file is read by ``Core.read_model``, the graph OpenVINO runs from the ONNX file itself:
    ``ov.convert_model`` (openvino 2026.4) folds a window reshape of the traced graph to the first batch
    size run, so a batch of 1 followed by a batch of 6 fails in the CPU plugin's Reshape.
    """
    import openvino as ov

    from swinkit.runtime.openvino_core import openvino_core

    model = ov_model if ov_model is not None else openvino_core().read_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)  # save_model halves weights by default
    return xml_path


def remove_graph(folder: Path, format: str) -> None:
    """Delete a graph's files (an IR's .xml and .bin)."""
    graph = folder / GRAPH_FILES[format]
    for path in (graph, graph.with_suffix(".bin")) if format == "openvino" else (graph,):
        if path.exists():
            os.unlink(path)


def is_export(source: str | os.PathLike) -> bool:
    """Whether ``source`` is a local export folder (it holds ``export.json``)."""
    return (Path(source) / EXPORT_FILE).is_file()

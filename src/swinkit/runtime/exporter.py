"""``export_model``: a saved model as an export folder (``swinkit export``), written atomically.

Everything is written into a hidden staging folder beside the destination, loaded back and checked there,
and only then renamed into place (an earlier export at the destination is replaced whole), so a failure or a
refused int8 graph leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swinkit.checkpoint_io import make_folder
from swinkit.runtime.backends import check_pair
from swinkit.runtime.export import (
    DEFAULT_RUNTIME,
    EXPORT_FILE,
    FORMATS,
    GRAPH_FILES,
    INPUT_NAME,
    OPSET,
    ExportInfo,
    export_onnx,
    onnx_to_openvino,
    write_export,
)
from swinkit.runtime.graph import GraphSpec, check_static
from swinkit.runtime.quantize import (
    MAX_CALIBRATION_IMAGES,
    Agreement,
    Bound,
    check_agreement,
    default_bounds,
    load_pixels,
    quantize_onnx,
    quantize_openvino,
)


@dataclass
class ExportRequest:
    """What ``swinkit export`` was asked for."""

    format: str  # onnx | openvino
    precision: str = "fp32"
    calibration_data: str | os.PathLike | None = None  # images for int8 calibration
    validation_data: str | os.PathLike | None = None  # images for the check (default: the calibration ones)
    force: bool = False  # write an int8 graph past the agreement bounds
    bounds: Mapping[str, float] | None = None  # overrides of the task's default bounds, by figure name
    max_images: int = MAX_CALIBRATION_IMAGES

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown export format {self.format!r}; choose {' or '.join(FORMATS)}")
        check_pair(DEFAULT_RUNTIME[self.format], self.precision)
        if self.precision == "int8" and self.calibration_data is None:
            raise ValueError(
                "--precision int8 needs --calibration-data DIR: images to calibrate the quantization on"
            )


def _check_destination(destination: Path) -> None:
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"cannot export to {destination}: it is a file, not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not (destination / EXPORT_FILE).is_file():
        raise ValueError(
            f"{destination} holds files that are not a swinkit export; export into a new or empty folder"
        )


@contextlib.contextmanager
def _staging(destination: Path) -> Iterator[Path]:
    """A hidden folder beside ``destination``, renamed over it on success, removed on failure."""
    make_folder(destination.parent, destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        yield staging
        old = destination.with_name(f"{staging.name}.old")
        if destination.exists():
            os.replace(destination, old)
        os.replace(staging, destination)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# an export's own files, never copied from a source that is itself an export (the IR's weights: model.bin)
_EXPORT_FILES = (EXPORT_FILE, *GRAPH_FILES.values(), Path(GRAPH_FILES["openvino"]).with_suffix(".bin").name)


def _write_model_files(predictor: Any, source: str | os.PathLike, folder: Path) -> None:
    """The saved model beside the graph: a classifier in the HF layout, another task's folder copied."""
    from swinkit.inference import Predictor
    from swinkit.loading import resolve_source, save_pretrained

    if isinstance(predictor, Predictor):
        save_pretrained(predictor.model, folder, preprocessing=predictor.processor.to_preprocessor_config())
        return
    path = resolve_source(source)
    if not path.is_dir():
        raise ValueError(f"exporting this model needs its saved model folder, not the file {path}")
    for file in path.iterdir():
        if file.is_file() and file.name not in _EXPORT_FILES:
            shutil.copy2(file, folder / file.name)


def _write_graph(spec: GraphSpec, folder: Path, request: ExportRequest, calibration: list) -> None:
    """The fp32 ONNX graph, then (OpenVINO) its IR, then (int8) the quantized graph in their place."""
    onnx_path = export_onnx(
        spec.module, folder / "model.onnx", spec.example, output_names=spec.output_names,
        dynamic_hw=spec.dynamic_hw,
    )  # fmt: skip
    int8 = request.precision == "int8"
    if request.format == "onnx":
        if int8:
            fp32 = onnx_path.rename(folder / ".fp32.onnx")
            quantize_onnx(fp32, onnx_path, calibration, INPUT_NAME)
            fp32.unlink()
        return
    ov_model = quantize_openvino(onnx_path, calibration) if int8 else None
    onnx_to_openvino(onnx_path, folder / GRAPH_FILES["openvino"], ov_model=ov_model)
    onnx_path.unlink()


def graph_of(predictor: Any) -> GraphSpec:
    """The predictor's ``GraphSpec`` (``swinkit.runtime.graph``), checked against its preprocessing."""
    if not hasattr(predictor, "export_graph"):
        raise ValueError(
            f"{type(predictor).__name__} has no export_graph(): this task's models are not exported yet"
        )
    spec = predictor.export_graph()
    check_static(spec, predictor.prepare)
    return spec


def _bounds(task: str, overrides: Mapping[str, float] | None) -> tuple[Bound, ...]:
    bounds = default_bounds(task)
    unknown = set(overrides or {}) - {b.name for b in bounds}
    if unknown:
        raise ValueError(
            f"{task} agreement has no figure {sorted(unknown)[0]}; it has {[b.name for b in bounds]}"
        )
    return tuple(dataclasses.replace(b, value=(overrides or {}).get(b.name, b.value)) for b in bounds)


def _agreement(task: str, reference: Any, folder: Path, request: ExportRequest, pixels: list) -> Agreement:
    from swinkit.inference import load_predictor

    runtime = DEFAULT_RUNTIME[request.format]
    candidate = load_predictor(folder, runtime=runtime, precision=request.precision)
    return check_agreement(task, reference, candidate, pixels, _bounds(task, request.bounds))


def _check_pixels(reference: Any, request: ExportRequest) -> tuple[list, list]:
    """(calibration, validation) prepared images; validation defaults to the calibration images."""
    load = lambda folder: load_pixels(folder, reference.prepare, request.max_images)  # noqa: E731
    calibration = load(request.calibration_data) if request.calibration_data is not None else []
    validation = load(request.validation_data) if request.validation_data is not None else calibration
    return calibration, validation


def export_model(
    source: str | os.PathLike, destination: str | os.PathLike, request: ExportRequest
) -> ExportInfo:
    """``source`` exported to the folder ``destination`` as ``request`` asks; its ``export.json`` contents.

    With images to check on (always for int8), the exported graph's agreement with torch fp32 is measured;
    past the bounds the export is refused (ValueError, nothing written) unless ``request.force``.
    """
    from swinkit.inference import load_predictor, task_of_source

    request.check()
    destination = Path(destination)
    _check_destination(destination)
    task = task_of_source(source).name
    reference = load_predictor(source)
    calibration, validation = _check_pixels(reference, request)
    with _staging(destination) as staging:
        _write_model_files(reference, source, staging)
        saved = load_predictor(staging)  # the weights as saved: what the fingerprint covers
        spec = graph_of(saved)
        graph_input = getattr(saved, "graph_input", None)  # prepared image -> graph input, where they differ
        inputs = [graph_input(p) for p in calibration] if graph_input is not None else calibration
        _write_graph(spec, staging, request, inputs)
        config_hash, fingerprint = saved.fingerprint()
        info = ExportInfo(
            request.format, request.precision, OPSET, str(source), fingerprint, config_hash,
            list(spec.example.shape), list(spec.output_names), spec.dynamic_hw,
        )  # fmt: skip
        write_export(staging, info)
        if validation:
            agreement = _agreement(task, reference, staging, request, validation)
            if not agreement.passed and not request.force:
                raise ValueError(
                    f"{request.precision} {request.format} export refused, too far from fp32: {agreement.text()}; "
                    "nothing was written (pass --force to write it anyway)"
                )
            info = dataclasses.replace(info, agreement=agreement.to_dict())
            write_export(staging, info)
    return info

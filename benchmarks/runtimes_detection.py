"""Mask R-CNN Swin-T at 800x1333 on every runtime path (``benchmarks/runtimes.py --tasks mask_rcnn``).

The predictor's split (``swinkit.tasks.instance_predictor``): the dense half (backbone, FPN, RPN head convs;
``MaskRCNN.dense``) runs on the backend, the sparse half (proposal NMS, RoIAlign, box and mask heads, mask
pasting) in torch fp32 on its outputs, the same code for every path. Paths: torch fp32, torch bf16 weights,
ONNX Runtime fp32, OpenVINO fp32 and bf16, and (``--det-int8``) ONNX Runtime and OpenVINO int8 calibrated on
``--calibration`` synthetic images (slow: NNCF runs the fp32 graph on each). Random-init weights (the
``mask_rcnn_swin_t_1x_coco`` preset) with the score threshold at 0, so every image keeps its 100 best
detections and the mask head runs on 100 RoIs, as on a photo with objects; one 800x1333 image (padded to
800x1344, mmdet's test size for a 4:3 photo).

Figures per path, medians over ``--rounds`` alternating rounds: dense-half img/s, end-to-end img/s (the
predictor's ``detect`` on one prepared image), and the largest |dense output - torch fp32| (the FPN maps and
RPN logits/deltas); the sparse half's own share is printed once (it is the same code on every path).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from swinkit.models.detection.checkpoints import save_pretrained
from swinkit.models.detection.mask_rcnn import create_mask_rcnn, split_dense
from swinkit.runtime.backends import Backend, OnnxRuntimeBackend, OpenVINOBackend, TorchBackend
from swinkit.runtime.export import export_onnx
from swinkit.tasks.instance_predictor import InstancePredictor

HEIGHT, WIDTH = 800, 1333


def _seconds(run: Callable[[], object], seconds: float) -> float:
    """Seconds per call: at least two calls and ``seconds`` seconds."""
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        run()
        count += 1
    return (time.perf_counter() - start) / count


def _photo(seed: int) -> Image.Image:
    """A smooth random 1333x800 RGB field (photo-like statistics, not noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 12, 20, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False)
    array = (field[0].clamp(0, 1).permute(1, 2, 0) * 255).to(torch.uint8).numpy()  # (H, W, 3)
    return Image.fromarray(array)


def _predictor(folder: Path) -> InstancePredictor:
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_t_1x_coco", score_threshold=0.0).eval()
    return InstancePredictor.from_pretrained(save_pretrained(model, folder / "model"), batch_size=1)


def _int8_backends(predictor: InstancePredictor, onnx: Path, count: int) -> dict[str, Backend]:
    """ONNX Runtime (static QDQ) and OpenVINO (NNCF) int8 dense graphs calibrated on ``count`` fields."""
    from swinkit.runtime.export import INPUT_NAME
    from swinkit.runtime.quantize import quantize_onnx, quantize_openvino

    calibration = [predictor.prepare(_photo(100 + i)) for i in range(count)]
    int8 = quantize_onnx(onnx, onnx.with_name("int8.onnx"), calibration, INPUT_NAME)
    compiled = OpenVINOBackend(onnx, "int8")
    compiled.model = quantize_openvino(onnx, calibration)
    compiled.set_hint("LATENCY")
    return {"ONNX Runtime int8": OnnxRuntimeBackend(int8, "int8"), "OpenVINO int8": compiled}


def _backends(predictor: InstancePredictor, folder: Path, args: argparse.Namespace) -> dict[str, Backend]:
    spec = predictor.export_graph()
    onnx = export_onnx(spec.module, folder / "dense.onnx", spec.example, output_names=spec.output_names,
                       dynamic_hw=spec.dynamic_hw)  # fmt: skip
    backends: dict[str, Backend] = {
        "torch fp32": predictor.backend,
        "torch bf16 weights": TorchBackend(spec.module, "bf16"),
        "ONNX Runtime fp32": OnnxRuntimeBackend(onnx, "fp32"),
        "OpenVINO fp32": OpenVINOBackend(onnx, "fp32"),
        "OpenVINO bf16": OpenVINOBackend(onnx, "bf16"),
    }
    if args.det_int8:
        backends.update(_int8_backends(predictor, onnx, args.calibration))
    return backends


def _sparse_share(predictor: InstancePredictor, prepared: object, seconds: float) -> str:
    """The sparse half's time (shared by every path) against the whole torch fp32 detect."""
    pixels = predictor.preprocessor.pad([prepared.pixels])
    dense = split_dense(predictor.backend(pixels))
    with torch.inference_mode():
        sparse = _seconds(lambda: predictor.model.predict_dense(dense, [prepared.meta]), seconds)
        found = predictor.model.predict_dense(dense, [prepared.meta]).detections[0]
    whole = _seconds(lambda: predictor.detect([prepared]), seconds)
    return f"sparse half (NMS, RoIAlign, box head on 1000 RoIs, mask head on {len(found)}): " \
           f"{sparse:.2f} s of {whole:.2f} s per image in torch fp32 ({100 * sparse / whole:.0f}%)"  # fmt: skip


def _time_path(predictor: InstancePredictor, backend: Backend, prepared: object, seconds: float) -> tuple:
    """(dense half, end-to-end detect) seconds per image of ``predictor`` on ``backend``."""
    pixels = predictor.preprocessor.pad([prepared.pixels])
    clone = predictor.with_backend(backend)
    return _seconds(lambda: backend(pixels), seconds), _seconds(lambda: clone.detect([prepared]), seconds)


def _print_table(times: dict[str, list[tuple]], diffs: dict[str, float], size: tuple) -> None:
    print(f"\n| Mask R-CNN Swin-T {size[0]}x{size[1]} path | dense img/s | end-to-end img/s "
          "| end-to-end x torch fp32 | max abs dense diff vs fp32 |\n|---|---|---|---|---|")  # fmt: skip
    medians = {n: [statistics.median(column) for column in zip(*rows)] for n, rows in times.items()}
    base = medians["torch fp32"][1]
    for name, (dense, whole) in medians.items():
        print(f"| {name} | {1 / dense:.2f} | {1 / whole:.2f} | x{base / whole:.2f} | {diffs[name]:.1e} |")


def run_mask_rcnn(args: argparse.Namespace) -> None:
    """Print the Mask R-CNN 800x1333 table (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="swinkit-maskrcnn-") as tmp:
        predictor = _predictor(Path(tmp))
        prepared = predictor.prepare(_photo(0))
        pixels = predictor.preprocessor.pad([prepared.pixels])  # (1, 3, 800, 1344)
        backends = _backends(predictor, Path(tmp), args)  # outside inference mode: the bf16 copy's weights
        print(f"\n{_sparse_share(predictor, prepared, args.seconds)}", flush=True)
        expected = predictor.backend(pixels)
        diffs = {
            name: max(float((a - b).abs().max()) for a, b in zip(expected, run(pixels), strict=True))
            for name, run in backends.items()
        }
        times: dict[str, list[tuple]] = {name: [] for name in backends}
        for r in range(args.rounds):
            for name in backends if r % 2 == 0 else reversed(list(backends)):
                times[name].append(_time_path(predictor, backends[name], prepared, args.seconds))
        _print_table(times, diffs, tuple(pixels.shape[2:]))

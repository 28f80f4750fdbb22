"""Issue 14's table: swinkit's inference paths against transformers eager fp32, Swin-T 224, one process.

Every path runs the same random-init Swin-T weights (``transformers.SwinForImageClassification(SwinConfig())``
saved and loaded by ``swinkit.from_pretrained``, as ``throughput.py``): transformers eager fp32 (the
baseline), swinkit eager fp32 (plain, and with oneDNN-prepacked linear layers), bf16 autocast and bf16 weights, and the exported graphs through
``swinkit.runtime`` (``export_model``, ``graph_backend``): ONNX Runtime fp32 / int8 (static QDQ), OpenVINO
fp32 / bf16 (``OpenVINOBackend`` on the exported ONNX file: the fp32 IR folder written by ``export_model``
failed at batch 8 on this run, a reshape with the batch baked in) / int8 (NNCF IR), plus plain OpenVINO bf16 on the ONNX file (``compile_model`` with only the
precision hint) as the reference to beat. At batch 8 the OpenVINO paths use the THROUGHPUT hint (several
streams, async infer requests); at batch 1 the LATENCY hint. int8 is calibrated on ``--calibration``
synthetic images (smooth random fields, not photos).

Timing: a warm-up, then ``--rounds`` rounds in which every path runs ``--seconds`` seconds, the order
reversed every other round; the median img/s per path and its ratio to transformers' in the same rounds.
Agreement: max |logit - swinkit fp32 logit| and top-1 agreement with swinkit fp32 on ``--images`` synthetic
images (random weights give small logit margins, so top-1 agreement here is a strict test).

    python benchmarks/runtimes.py                  # Swin-T 224, batch 1 and 8
    python benchmarks/runtimes.py --quick          # smoke test
    python benchmarks/runtimes.py --tasks upernet  # adds UPerNet 512x512 (and mask_rcnn 800x1333 once it exists)
    python benchmarks/runtimes.py --no-classification --tasks upernet  # only the UPerNet table
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

import swinkit
from swinkit.runtime.backends import OpenVINOBackend, TorchBackend, graph_backend
from swinkit.runtime.exporter import ExportRequest, export_model
from swinkit.runtime.openvino_core import openvino_core

Runner = Callable[[torch.Tensor], torch.Tensor]
BASELINE = "transformers eager fp32"
REFERENCE = "swinkit eager fp32"


def synthetic_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """(count, 3, size, size) smooth random fields in about [-2, 2]: normalised-pixel-like, not noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 8, 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def write_images(pixels: torch.Tensor, folder: Path) -> Path:
    """Save (N, 3, H, W) fields as PNGs (min-max scaled per image) for calibration."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(pixels):
        scaled = (image - image.min()) / (image.max() - image.min() + 1e-6)
        array = (scaled.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:04d}.png")
    return folder


def plain_openvino_bf16(onnx_file: Path, hint: str) -> Runner:
    """The ONNX file compiled by OpenVINO with the bf16 precision hint and the performance hint only."""
    import openvino as ov
    import openvino.properties.hint as hints

    config = {
        hints.inference_precision: ov.Type.bf16,
        hints.performance_mode: getattr(hints.PerformanceMode, hint),
    }
    compiled = openvino_core().compile_model(str(onnx_file), "CPU", config)
    request = compiled.create_infer_request()
    return lambda pixels: torch.from_numpy(request.infer({0: pixels.numpy()})[0].copy())


def autocast_runner(model: torch.nn.Module) -> Runner:
    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(pixels).float()

    return run


def classification_paths(folder: Path, calibration: Path) -> dict[str, dict[str, Runner]]:
    """Per hint ("LATENCY", "THROUGHPUT"): path name -> runner, all on the same Swin-T weights."""
    torch.manual_seed(0)
    reference = transformers.SwinForImageClassification(transformers.SwinConfig()).eval()
    reference.save_pretrained(folder / "hf")
    ours = swinkit.from_pretrained(folder / "hf").eval()
    exports = {}
    for fmt, precision in (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")):
        request = ExportRequest(fmt, precision, calibration if precision == "int8" else None, force=True)
        destination = folder / f"{fmt}-{precision}"
        info = export_model(folder / "hf", destination, request)
        exports[fmt, precision] = destination / info.graph_file
        print(f"exported {fmt} {precision}: {info.agreement or ''}", flush=True)

    def hf(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return reference(pixel_values=pixels).logits

    common = {
        BASELINE: hf,
        REFERENCE: TorchBackend(ours, "fp32"),
        "swinkit eager fp32, prepacked linear": TorchBackend(ours, "fp32", prepack=True),
        "swinkit eager, bf16 autocast": autocast_runner(ours),
        "swinkit eager, bf16 weights": TorchBackend(ours, "bf16"),
        "ONNX Runtime fp32": graph_backend(exports["onnx", "fp32"], "onnxruntime", "fp32"),
        "ONNX Runtime int8 (static QDQ)": graph_backend(exports["onnx", "int8"], "onnxruntime", "int8"),
    }
    paths = {}
    for hint in ("LATENCY", "THROUGHPUT"):
        paths[hint] = {
            **common,
            "OpenVINO fp32": OpenVINOBackend(exports["onnx", "fp32"], "fp32", hint=hint),
            "OpenVINO bf16": OpenVINOBackend(exports["onnx", "fp32"], "bf16", hint=hint),
            "OpenVINO int8 (NNCF)": OpenVINOBackend(exports["openvino", "int8"], "int8", hint=hint),
            "plain OpenVINO bf16 on the ONNX file": plain_openvino_bf16(exports["onnx", "fp32"], hint),
        }
    return paths


def agreement(
    paths: dict[str, Runner], images: torch.Tensor, batch: int = 8
) -> dict[str, tuple[float, float]]:
    """Path -> (max |logit diff| vs swinkit fp32, top-1 agreement with it) over ``images``.

    A path that fails is reported with its error and dropped from ``paths``.
    """
    outputs = {}
    for name, run in list(paths.items()):
        try:
            outputs[name] = torch.cat(
                [run(images[i : i + batch]).float() for i in range(0, len(images), batch)]
            )
        except RuntimeError as e:
            print(f"{name} failed: {str(e).splitlines()[-1]}", flush=True)
            del paths[name]
    expected = outputs[REFERENCE]
    return {
        name: (
            float((got - expected).abs().max()),
            float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
        )
        for name, got in outputs.items()
    }


def images_per_second(run: Runner, pixels: torch.Tensor, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        run(pixels)
        count += 1
    return count * pixels.shape[0] / (time.perf_counter() - start)


def timing(paths: dict[str, Runner], pixels: torch.Tensor, rounds: int, seconds: float) -> dict[str, tuple]:
    """Path -> (median img/s, median ratio to the baseline in the same round), alternating rounds."""
    names = list(paths)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        images_per_second(paths[name], pixels, 0.0)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            speeds[name].append(images_per_second(paths[name], pixels, seconds))
    return {
        name: (
            statistics.median(values),
            statistics.median(a / b for a, b in zip(values, speeds[BASELINE], strict=True)),
        )
        for name, values in speeds.items()
    }


def print_table(rows: dict[int, dict[str, tuple]], agree: dict[str, tuple[float, float]]) -> None:
    batches = sorted(rows)
    header = " | ".join(f"batch {b} img/s (x tf)" for b in batches)
    print(f"\n| path | {header} | max abs logit diff vs fp32 | top-1 agreement |")
    print("|---|" + "---|" * len(batches) + "---|---|")
    for name in rows[batches[0]]:
        cells = " | ".join(f"{rows[b][name][0]:.1f} (x{rows[b][name][1]:.2f})" for b in batches)
        diff, top1 = agree.get(name, (float("nan"), float("nan")))
        print(f"| {name} | {cells} | {diff:.1e} | {100 * top1:.1f}% |")


def run_classification(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="swinkit-runtimes-") as tmp:
        folder = Path(tmp)
        calibration = write_images(synthetic_images(args.calibration, 224, seed=1), folder / "calibration")
        paths = classification_paths(folder, calibration)
        agree = agreement(paths["LATENCY"], synthetic_images(args.images, 224, seed=2))
        rows = {}
        with torch.inference_mode():
            for batch in args.batch_sizes:
                hint = "LATENCY" if batch == 1 else "THROUGHPUT"
                pixels = synthetic_images(batch, 224, seed=3)
                rows[batch] = timing(paths[hint], pixels, args.rounds, args.seconds)
                print(f"batch {batch} done ({hint} hint for OpenVINO)", flush=True)
        print_table(rows, agree)


def task_network(task: str) -> tuple[torch.nn.Module, tuple[int, int]] | None:
    """The Swin-T network of ``task`` and its input size, or None when swinkit does not have the task yet."""
    torch.manual_seed(0)
    try:
        from swinkit.models import detection
    except ImportError:
        return None
    create = getattr(detection, "create_mask_rcnn", None)  # the detection helper's builder, when it lands
    if create is None:
        return None
    return create("mask_rcnn_swin_tiny").eval(), (800, 1333)


UPERNET = "upernet_swin_tiny_patch4_window7_224_1k_ade20k_512"
UPERNET_REFERENCE = "UPerNet swinkit eager fp32"


def upernet_paths(folder: Path, calibration: list[torch.Tensor]) -> dict[str, Runner]:
    """Path name -> runner of UPerNet Swin-T's network (``DecodeLogits``: pixels -> raw logits) as the
    segmentation predictor runs it: torch fp32 / bf16 weights, then ``upernet_graph_paths``."""
    from swinkit.models.segmentation import create_upernet
    from swinkit.models.segmentation.inference import InferenceSettings
    from swinkit.runtime.export import export_onnx
    from swinkit.tasks.segmentation_predict import SegmentationPredictor

    torch.manual_seed(0)
    model = create_upernet(UPERNET).eval()
    predictor = SegmentationPredictor(model, settings=InferenceSettings(mode="slide"))
    spec = predictor.export_graph()  # static at the 512x512 crop
    onnx_file = export_onnx(spec.module, folder / "upernet.onnx", spec.example)
    return {
        UPERNET_REFERENCE: predictor.backend,
        "UPerNet swinkit eager, bf16 weights": TorchBackend(spec.module, "bf16"),
        **upernet_graph_paths(onnx_file, folder, calibration),
    }


def upernet_graph_paths(onnx_file: Path, folder: Path, calibration: list[torch.Tensor]) -> dict[str, Runner]:
    """The slide-mode graph (static, one 512x512 crop) on ONNX Runtime fp32 / int8 (static QDQ) and OpenVINO
    fp32 / bf16 / int8 (NNCF), int8 calibrated on ``calibration`` crops. A path that cannot be built is
    reported and left out (NNCF's mixed preset failed on this graph: "QConfigs for unified scale group ...
    are not equal", the UPerHead concats; ``quantize_openvino``'s symmetric preset builds it)."""
    from swinkit.runtime.export import onnx_to_openvino
    from swinkit.runtime.quantize import quantize_onnx, quantize_openvino

    def openvino_int8() -> Runner:
        ir = onnx_to_openvino(
            onnx_file, folder / "int8.xml", ov_model=quantize_openvino(onnx_file, calibration)
        )
        return OpenVINOBackend(ir, "int8")

    def onnx_int8() -> Runner:
        int8 = quantize_onnx(onnx_file, folder / "upernet-int8.onnx", calibration, "pixel_values")
        return graph_backend(int8, "onnxruntime", "int8")

    builders = {
        "UPerNet ONNX Runtime fp32": lambda: graph_backend(onnx_file, "onnxruntime", "fp32"),
        "UPerNet ONNX Runtime int8 (static QDQ)": onnx_int8,
        "UPerNet OpenVINO fp32": lambda: OpenVINOBackend(onnx_file, "fp32"),
        "UPerNet OpenVINO bf16": lambda: OpenVINOBackend(onnx_file, "bf16"),
        "UPerNet OpenVINO int8 (NNCF)": openvino_int8,
    }
    paths = {}
    for name, build in builders.items():
        try:
            paths[name] = build()
        except Exception as e:  # noqa: BLE001 - a benchmark reports what it cannot run
            print(f"{name} skipped: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
    return paths


def _raw(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return (out[0] if isinstance(out, tuple) else out).float()


def upernet_agreement(paths: dict[str, Runner], crops: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Path -> (max |raw logit diff| vs torch fp32, pixel agreement of the argmax label maps) on ``crops``."""
    outputs = {name: torch.cat([_raw(run(crop[None])) for crop in crops]) for name, run in paths.items()}
    expected = outputs[UPERNET_REFERENCE]
    return {
        name: (
            float((got - expected).abs().max()),
            float((got.argmax(1) == expected.argmax(1)).float().mean()),
        )
        for name, got in outputs.items()
    }


def run_upernet(args: argparse.Namespace) -> None:
    """UPerNet Swin-T at 512x512 (one slide-mode crop, batch 1): img/s per path and its ratio to torch fp32
    in the same round, alternating rounds; agreement on synthetic crops."""
    count = max(2, args.calibration // 8)
    with tempfile.TemporaryDirectory(prefix="swinkit-runtimes-") as tmp:
        paths = upernet_paths(Path(tmp), list(synthetic_images(count, 512, seed=5)))
        agree = upernet_agreement(paths, synthetic_images(count, 512, seed=4))
        pixels = synthetic_images(1, 512, seed=6)
        names, speeds = list(paths), {name: [] for name in paths}
        with torch.inference_mode():
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else reversed(names):
                    speeds[name].append(images_per_second(paths[name], pixels, args.seconds))
    reference = speeds[UPERNET_REFERENCE]
    print(
        f"\n| {UPERNET} 512x512 path | batch 1 img/s (x torch fp32) | max abs logit diff | pixel agreement |"
    )
    print("|---|---|---|---|")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(speeds[name], reference, strict=True))
        diff, same = agree[name]
        print(
            f"| {name} | {statistics.median(speeds[name]):.2f} (x{ratio:.2f}) | {diff:.1e} | {100 * same:.2f}% |"
        )


def run_task(task: str, args: argparse.Namespace) -> None:
    """Batch 1 img/s of ``task``'s Swin-T network: eager fp32, bf16 weights, OpenVINO fp32 and bf16."""
    from swinkit.runtime.export import export_onnx

    found = task_network(task)
    if found is None:
        print(
            f"\n{task}: swinkit has no such model yet (no swinkit.models.detection.create_mask_rcnn), skipped"
        )
        return
    model, (height, width) = found
    pixels = synthetic_images(1, max(height, width))[:, :, :height, :width].contiguous()
    with tempfile.TemporaryDirectory(prefix="swinkit-runtimes-") as tmp:
        graph = export_onnx(model, Path(tmp) / "model.onnx", pixels, output_names=("logits",))
        paths = {
            f"{task} swinkit eager fp32": TorchBackend(model, "fp32"),
            f"{task} swinkit eager, bf16 weights": TorchBackend(model, "bf16"),
            f"{task} OpenVINO fp32": OpenVINOBackend(graph, "fp32"),
            f"{task} OpenVINO bf16": OpenVINOBackend(graph, "bf16"),
        }
        expected = paths[f"{task} swinkit eager fp32"](pixels)
        print(
            f"\n| {task} {height}x{width} path | batch 1 img/s | max abs logit diff vs fp32 |\n|---|---|---|"
        )
        for name, run in paths.items():
            speed = statistics.median(
                images_per_second(run, pixels, args.seconds) for _ in range(args.rounds)
            )
            diff = float((run(pixels) - expected).abs().max())
            print(f"| {name} | {speed:.2f} | {diff:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 short rounds, few images")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per batch size")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing length of one path in one round")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=256, help="images for the agreement figures")
    parser.add_argument("--calibration", type=int, default=64, help="int8 calibration images")
    parser.add_argument(
        "--tasks", nargs="*", default=[], choices=("upernet", "mask_rcnn"), help="extra tasks"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--det-int8", action="store_true", help="mask_rcnn: add the int8 paths (slow)")
    parser.add_argument(
        "--no-classification", action="store_true", help="only the --tasks tables, not Swin-T 224's"
    )
    args = parser.parse_args()
    if args.no_classification and not args.tasks:
        parser.error("--no-classification leaves nothing to run: add --tasks upernet or mask_rcnn")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.seconds, args.images, args.calibration = 2, 0.3, 16, 8
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.no_classification:
        run_classification(args)
    for task in args.tasks:
        if task == "upernet":
            run_upernet(args)
        elif task == "mask_rcnn":
            from runtimes_detection import run_mask_rcnn  # benchmarks/runtimes_detection.py

            run_mask_rcnn(args)
        else:
            run_task(task, args)


if __name__ == "__main__":
    main()

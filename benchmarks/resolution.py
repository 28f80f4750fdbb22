"""Time per pixel of Swin-T classification-backbone inference from 224^2 to 1792^2 (the linear-cost claim).

The network is swinkit's Swin-T trunk (patch 4, window 7, random weights, no head: the forward returns the
pooled last-stage features), batch 1, fp32, eval mode. At every size it runs on the torch path
(``torch.inference_mode``) and on OpenVINO (the ONNX export of that size through
``swinkit.runtime.backends.OpenVINOBackend``, fp32 or ``--precision bf16``); the two take turns in each of
``--rounds`` rounds and the median is kept. Window attention makes the cost linear in the pixel count, so
the time per pixel should stay flat: the check prints each size's ratio to the 224^2 figure against the
15% bound, then fits time = a + b * pixels and prints how constant the marginal cost per pixel is (a is the
fixed cost of one forward, whatever its size). A PNG of time per pixel against size is written (``--plot``).

    python benchmarks/resolution.py                       # 224 .. 1792, torch and OpenVINO
    python benchmarks/resolution.py --sizes 224 448 --rounds 3 --plot /tmp/res.png
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

from swinkit.models.factory import create_model
from swinkit.runtime.backends import OpenVINOBackend
from swinkit.runtime.export import export_onnx

BOUND = 0.15  # allowed relative change of the time per pixel against 224^2
DEFAULT_PLOT = Path(__file__).parent / "results" / "resolution.png"


def seconds_per_run(run: Callable[[torch.Tensor], object], pixels: torch.Tensor, min_seconds: float) -> float:
    """Mean seconds of one forward pass, repeated until ``min_seconds`` have passed (at least twice)."""
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < min_seconds:
        run(pixels)
        count += 1
    return (time.perf_counter() - start) / count


def runners(model: torch.nn.Module, size: int, folder: Path, precision: str) -> dict[str, Callable]:
    """The torch path and the OpenVINO path of ``model`` at ``size`` x ``size``."""
    example = torch.randn(1, 3, size, size)
    graph = export_onnx(model, folder / f"swin_t_{size}.onnx", example, output_names=("features",))
    openvino = OpenVINOBackend(graph, precision)

    def eager(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(pixels)

    return {"torch fp32": eager, f"openvino {precision}": openvino}


def measure(sizes: list[int], rounds: int, min_seconds: float, precision: str) -> dict[str, dict[int, float]]:
    """Path -> size -> median nanoseconds per pixel."""
    torch.manual_seed(0)
    model = create_model("swin_tiny_patch4_window7_224", num_classes=0).eval()
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="swinkit-resolution-") as folder:
        for size in sizes:
            paths = runners(model, size, Path(folder), precision)
            pixels = torch.randn(1, 3, size, size)
            times: dict[str, list[float]] = {name: [] for name in paths}
            for run in paths.values():
                run(pixels)  # warm-up
            for r in range(rounds):
                for name in list(paths) if r % 2 == 0 else reversed(list(paths)):
                    times[name].append(seconds_per_run(paths[name], pixels, min_seconds))
            for name, values in times.items():
                results.setdefault(name, {})[size] = 1e9 * statistics.median(values) / size**2
            print(
                f"{size:>5}^2  " + "  ".join(f"{n}: {results[n][size]:7.1f} ns/px" for n in paths), flush=True
            )
    return results


def fit_linear(per_size: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``time = a + b * pixels`` over the sizes (ns per pixel given): (a in ms, b in ns/px)."""
    pixels = np.array([size**2 for size in per_size], dtype=float)
    times = np.array([per_size[size] * size**2 for size in per_size])  # ns per run
    b, a = np.polyfit(pixels, times, 1)
    return a / 1e6, b


def report(results: dict[str, dict[int, float]]) -> None:
    """Per path: time per pixel against the smallest size (the 15% check), then the linear fit
    ``a + b * pixels`` and each size's marginal cost ``(t - a) / pixels`` against ``b``. A fixed cost ``a``
    per forward (the few hundred small ops and their thread barriers, paid at any size) is what makes the
    smallest image dearer per pixel; a flat marginal cost is the linear-complexity claim."""
    for name, per_size in results.items():
        first = min(per_size)
        ratios = {size: value / per_size[first] for size, value in per_size.items()}
        worst = max(ratios.values(), key=lambda r: abs(r - 1))
        verdict = "within" if abs(worst - 1) <= BOUND else "NOT within"
        print(f"\n{name}: time per pixel relative to {first}^2 ({verdict} {BOUND:.0%})")
        for size, ratio in ratios.items():
            print(f"  {size:>5}^2  {per_size[size]:8.1f} ns/px  x{ratio:.3f}")
        if len(per_size) < 3:
            continue
        a, b = fit_linear(per_size)
        print(f"  fit: time = {a:.1f} ms + {b:.1f} ns x pixels; marginal cost (t - a) / pixels against b:")
        if a < 0:
            print(
                "  (a < 0: the largest sizes cost more than linear, e.g. activations outgrowing the caches)"
            )
        for size, value in per_size.items():
            marginal = value - 1e6 * a / size**2
            share = 1e6 * a / (value * size**2)
            print(
                f"  {size:>5}^2  {marginal:8.1f} ns/px  x{marginal / b:.3f}  (fixed cost {share:.0%} of the run)"
            )


def plot(results: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, per_size in results.items():
        sizes = sorted(per_size)
        axes.plot(sizes, [per_size[s] for s in sizes], marker="o", label=name)
    axes.set_xlabel("image side (pixels), batch 1")
    axes.set_ylabel("ns per pixel")
    axes.set_ylim(bottom=0)
    axes.set_title("Swin-T backbone inference: time per pixel")
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nplot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448, 672, 896, 1344, 1792])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per size")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing length of one round")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="OpenVINO precision")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG written")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Swin-T backbone, batch 1, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = measure(args.sizes, args.rounds, args.min_seconds, args.precision)
    report(results)
    plot(results, args.plot)


if __name__ == "__main__":
    main()

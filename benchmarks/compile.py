"""torch.compile against eager on a swinkit classifier: compile time, then img/s alternating in one process.

    python benchmarks/compile.py                                   # Swin-T 224 (the compile takes minutes)
    python benchmarks/compile.py --preset swin_micro --size 224    # a small model, seconds to compile

Paths on the same random-init weights, fp32, eval mode: eager (``TorchBackend``), eager with prepacked
linear layers, and ``runtime.torch_speed.compile_network`` (inductor, image size static, batch symbolic).
The first compiled call of each batch size is timed as its compile time. Then ``--rounds`` rounds in which
every path runs ``--seconds`` seconds, the order reversed every other round; the median img/s per path and
its median ratio to eager in the same rounds, with the max |logit diff| against eager.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from runtimes import Runner, images_per_second  # benchmarks/runtimes.py: the same timing loop

from swinkit.models.factory import create_model
from swinkit.runtime.backends import TorchBackend
from swinkit.runtime.torch_speed import compile_network


def compiled_runner(model: torch.nn.Module, batches: list[int], size: int) -> tuple[Runner, dict[int, float]]:
    """The compiled network and the seconds its first call took at each batch size (the compile)."""
    compiled = compile_network(model)

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(pixels)

    seconds = {}
    for batch in batches:
        start = time.perf_counter()
        run(torch.randn(batch, 3, size, size))
        seconds[batch] = time.perf_counter() - start
        print(f"compile at batch {batch}: {seconds[batch]:.1f} s", flush=True)
    return run, seconds


def timing(paths: dict[str, Runner], pixels: torch.Tensor, rounds: int, seconds: float) -> None:
    """Print each path's median img/s, ratio to eager in the same rounds, and max |diff| against eager."""
    names = list(paths)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            speeds[name].append(images_per_second(paths[name], pixels, seconds))
    expected = paths["eager"](pixels)
    for name, values in speeds.items():
        ratio = statistics.median(a / b for a, b in zip(values, speeds["eager"], strict=True))
        diff = float((paths[name](pixels) - expected).abs().max())
        print(f"| {name} | {pixels.shape[0]} | {statistics.median(values):.1f} | x{ratio:.2f} | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.preset, image_size=args.size, num_classes=1000).eval()
    print(f"{args.preset} at {args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    compiled, _ = compiled_runner(model, args.batch_sizes, args.size)
    paths = {
        "eager": TorchBackend(model),
        "eager, prepacked linear": TorchBackend(model, prepack=True),
        "torch.compile (inductor)": compiled,
    }
    print("\n| path | batch | img/s | x eager | max abs diff vs eager |\n|---|---|---|---|---|")
    for batch in args.batch_sizes:
        timing(paths, torch.randn(batch, 3, args.size, args.size), args.rounds, args.seconds)


if __name__ == "__main__":
    main()

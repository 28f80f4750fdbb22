"""Inference throughput of swinkit against transformers' Swin on the same Swin-T weights (CPU, fp32).

Both models are built from one random-init ``transformers.SwinForImageClassification(SwinConfig())``
checkpoint (``--version 2``: ``Swinv2ForImageClassification(Swinv2Config())``, the same tiny shape) (transformers keeps its default SDPA attention), run in eval mode under
``torch.inference_mode``, warmed up, then timed in many short rounds that alternate the two
implementations (the order flips every round) inside this one process. Other work on the machine
slows both alike; the medians over rounds and their ratio are what to read.

    python benchmarks/throughput.py            # batch 1 and 8 at 224, 30 rounds
    python benchmarks/throughput.py --quick    # smoke test: few short rounds
    python benchmarks/throughput.py --version 2 --batch-sizes 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import transformers

import swinkit

Runner = Callable[[torch.Tensor], torch.Tensor]


def load_pair(version: int = 1) -> dict[str, Runner]:
    """Name to a function (B, 3, H, W) pixels -> (B, 1000) logits; both share the same Swin-T weights."""
    torch.manual_seed(0)
    if version == 1:
        reference = transformers.SwinForImageClassification(transformers.SwinConfig()).eval()
    else:
        reference = transformers.Swinv2ForImageClassification(transformers.Swinv2Config()).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = swinkit.from_pretrained(folder).eval()
    return {"swinkit": ours, "transformers": lambda x: reference(pixel_values=x).logits}


def check_same_outputs(runners: dict[str, Runner], image_size: int) -> float:
    """Largest absolute logit difference between the implementations on one random batch."""
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        outputs = [run(pixels) for run in runners.values()]
    return max((o - outputs[0]).abs().max().item() for o in outputs[1:])


def time_round(run: Runner, pixels: torch.Tensor, iterations: int) -> float:
    """Images per second over ``iterations`` forward passes."""
    start = time.perf_counter()
    for _ in range(iterations):
        run(pixels)
    return iterations * pixels.shape[0] / (time.perf_counter() - start)


def measure(runners: dict[str, Runner], batch: int, image_size: int, rounds: int, iterations: int) -> dict:
    """Median img/s of each implementation over ``rounds`` alternating rounds (after one warm-up round)."""
    pixels = torch.randn(batch, 3, image_size, image_size)
    names = list(runners)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for name in names:
            time_round(runners[name], pixels, max(2, iterations))
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                speeds[name].append(time_round(runners[name], pixels, iterations))
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratios = [a / b for a, b in zip(speeds["swinkit"], speeds["transformers"])]
    return {"batch": batch, **medians, "ratio": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 rounds of 1 iteration")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds per batch size")
    parser.add_argument("--iterations", type=int, default=0, help="forward passes per round (0: 8/batch)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--version", type=int, choices=(1, 2), default=1, help="Swin v1 or v2 (tiny)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    runners = load_pair(args.version)
    print(
        f"Swin v{args.version}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"max |logit difference| = {check_same_outputs(runners, args.image_size):.2e}")
    print(f"{'batch':>5}  {'swinkit img/s':>13}  {'transformers img/s':>18}  {'ratio (median)':>14}")
    for batch in args.batch_sizes:
        iterations = 1 if args.quick else args.iterations or max(1, 8 // batch)
        row = measure(runners, batch, args.image_size, rounds, iterations)
        print(f"{batch:>5}  {row['swinkit']:>13.2f}  {row['transformers']:>18.2f}  {row['ratio']:>14.3f}")


if __name__ == "__main__":
    main()

"""Inference throughput of swinkit's UPerNet Swin-T against transformers' ``UperNetForSemanticSegmentation``
on the same weights (CPU, fp32, 512x512).

One random-init transformers UperNet with a Swin-T backbone and 150 classes (the ADE20K model's shape) is
saved and read back by ``swinkit.models.segmentation.checkpoints.load_hf``; both run in eval mode under
``torch.inference_mode``, are warmed up, then timed in short rounds that alternate the implementations (the
order flips every round) inside this one process, so other load on the machine slows both alike. transformers
always runs its auxiliary head; "swinkit" runs the same work (``auxiliary=True``), "swinkit, no aux" what
swinkit's predictor runs. The ratio is swinkit / transformers on the same work (median over rounds).

    python benchmarks/segmentation.py                 # batch 1 and 2, 5 rounds
    python benchmarks/segmentation.py --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import transformers

from swinkit.models.segmentation.checkpoints import load_hf

Runner = Callable[[torch.Tensor], torch.Tensor]


def load_runners() -> dict[str, Runner]:
    """Name to a function (B, 3, H, W) pixels -> (B, 150, H, W) logits; all share one set of weights."""
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.UperNetConfig(backbone_config=backbone, num_labels=150)
    reference = transformers.UperNetForSemanticSegmentation(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = load_hf(folder).eval()
    return {
        "swinkit": lambda x: ours(x, auxiliary=True).logits,
        "transformers": lambda x: reference(pixel_values=x).logits,
        "swinkit, no aux": lambda x: ours(x, auxiliary=False).logits,
    }


def check_same_outputs(runners: dict[str, Runner], image_size: int) -> float:
    """Largest absolute logit difference between swinkit and transformers on one random image."""
    pixels = torch.randn(1, 3, image_size, image_size)
    with torch.inference_mode():
        return (runners["swinkit"](pixels) - runners["transformers"](pixels)).abs().max().item()


def time_round(run: Runner, pixels: torch.Tensor, iterations: int) -> float:
    """Images per second over ``iterations`` forward passes."""
    start = time.perf_counter()
    for _ in range(iterations):
        run(pixels)
    return iterations * pixels.shape[0] / (time.perf_counter() - start)


def measure(runners: dict[str, Runner], batch: int, image_size: int, rounds: int, iterations: int) -> dict:
    """Median img/s of each implementation over ``rounds`` alternating rounds (after one warm-up pass each)."""
    pixels = torch.randn(batch, 3, image_size, image_size)
    names = list(runners)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for name in names:
            time_round(runners[name], pixels, 1)
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                speeds[name].append(time_round(runners[name], pixels, iterations))
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratios = [a / b for a, b in zip(speeds["swinkit"], speeds["transformers"], strict=True)]
    return {"batch": batch, **medians, "ratio": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per batch size")
    parser.add_argument("--iterations", type=int, default=1, help="forward passes per round")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runners = load_runners()
    print(
        f"UPerNet Swin-T, {args.image_size}x{args.image_size}, fp32, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"max |logit difference| = {check_same_outputs(runners, args.image_size):.2e}")
    header = f"{'batch':>5}  {'swinkit img/s':>13}  {'transformers img/s':>18}  {'ratio':>6}  {'swinkit, no aux':>15}"
    print(header)
    for batch in args.batch_sizes:
        row = measure(runners, batch, args.image_size, args.rounds, args.iterations)
        print(
            f"{batch:>5}  {row['swinkit']:>13.3f}  {row['transformers']:>18.3f}  {row['ratio']:>6.3f}  "
            f"{row['swinkit, no aux']:>15.3f}"
        )


if __name__ == "__main__":
    main()

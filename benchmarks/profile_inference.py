"""Where inference time goes: a torch.profiler table of the top ops by self CPU time, per implementation.

Profiles swinkit and transformers' Swin-T on the same weights (see ``throughput.py``), eval mode,
``torch.inference_mode``, fp32, after a warm-up, one profiled forward pass at a time, the two
implementations taking turns. Ops are grouped as matrix products (the linear
layers' GEMMs), fused attention (SDPA's CPU kernel), the patch-embedding convolution and everything
else (norms, activations, copies, rolls, adds, ...): the non-matmul remainder is what an
implementation can still shave.

    python benchmarks/profile_inference.py --batch 8 --iterations 5
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from throughput import Runner, load_pair
from torch.profiler import ProfilerActivity, profile

GROUPS = {
    "matmul": (
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_mkl_linear",
        "aten::mkldnn_linear",
    ),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",),
    "conv": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution"),
}


def group_of(op: str) -> str:
    return next((group for group, ops in GROUPS.items() if op in ops), "other")


def profile_once(run: Runner, pixels: torch.Tensor) -> dict[str, tuple[float, int]]:
    """op -> (self CPU ms, calls) of one forward pass."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(pixels)
    return {e.key: (e.self_cpu_time_total / 1000, e.count) for e in prof.key_averages()}


def profile_alternating(
    runners: dict[str, Runner], batch: int, image_size: int, iterations: int
) -> dict[str, list[tuple[str, float, int]]]:
    """Per implementation: (op, self CPU ms per forward, calls per forward), slowest first.

    The implementations take turns, one profiled forward each (order flipping every round), so load
    from other processes falls on both alike.
    """
    pixels = torch.randn(batch, 3, image_size, image_size)
    totals: dict[str, dict[str, list[float]]] = {name: defaultdict(lambda: [0.0, 0]) for name in runners}
    names = list(runners)
    with torch.inference_mode():
        for run in runners.values():
            run(pixels)
            run(pixels)
        for i in range(iterations):
            for name in names if i % 2 == 0 else reversed(names):
                for op, (ms, calls) in profile_once(runners[name], pixels).items():
                    totals[name][op][0] += ms / iterations
                    totals[name][op][1] += calls
    return {
        name: sorted(
            ((op, ms, calls // iterations) for op, (ms, calls) in ops.items() if ms > 0), key=lambda r: -r[1]
        )
        for name, ops in totals.items()
    }


def report(name: str, rows: list[tuple[str, float, int]], top: int) -> None:
    total = sum(ms for _, ms, _ in rows)
    groups: dict[str, float] = defaultdict(float)
    for op, ms, _ in rows:
        groups[group_of(op)] += ms
    print(f"\n== {name}: {total:.1f} ms self CPU per forward")
    print("   " + ", ".join(f"{g} {ms:.1f} ms ({100 * ms / total:.0f}%)" for g, ms in groups.items()))
    print(f"   {'op':<52} {'group':<9} {'ms/fwd':>8} {'%':>5} {'calls':>6}")
    for op, ms, calls in rows[:top]:
        print(f"   {op:<52} {group_of(op):<9} {ms:>8.2f} {100 * ms / total:>5.1f} {calls:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=5, help="profiled forward passes")
    parser.add_argument("--top", type=int, default=15, help="ops listed per implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runners = load_pair()
    print(f"Swin-T, batch {args.batch}, {args.image_size}px, fp32, {torch.get_num_threads()} threads")
    for name, rows in profile_alternating(runners, args.batch, args.image_size, args.iterations).items():
        report(name, rows, args.top)


if __name__ == "__main__":
    main()

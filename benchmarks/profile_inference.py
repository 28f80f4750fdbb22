"""Where inference time goes: a torch.profiler table of the top ops by self CPU time, per implementation.

Profiles swinkit and transformers' Swin-T on the same weights (see ``throughput.py``), eval mode,
``torch.inference_mode``, fp32, after a warm-up. Ops are grouped as matrix products (the linear
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


def profile_runner(run: Runner, batch: int, image_size: int, iterations: int) -> list[tuple[str, float, int]]:
    """(op, self CPU ms per forward, calls per forward) for every op, slowest first."""
    pixels = torch.randn(batch, 3, image_size, image_size)
    with torch.inference_mode():
        for _ in range(2):
            run(pixels)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                run(pixels)
    rows = [
        (e.key, e.self_cpu_time_total / 1000 / iterations, e.count // iterations)
        for e in prof.key_averages()
        if e.self_cpu_time_total > 0
    ]
    return sorted(rows, key=lambda row: -row[1])


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
    for name, run in runners.items():
        report(name, profile_runner(run, args.batch, args.image_size, args.iterations), args.top)


if __name__ == "__main__":
    main()

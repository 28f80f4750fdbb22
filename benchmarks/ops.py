"""Speed of the detection ops at Mask R-CNN sizes: NMS, batched NMS, multi-level RoIAlign and mask pasting.

Run: ``PYTHONPATH=src python benchmarks/ops.py [--threads N] [--repeats R]``; prints the median milliseconds.
"""

import argparse
import statistics
import time

import torch

from swinkit.ops import batched_nms, multi_level_roi_align, nms, paste_masks

STRIDES = [4, 8, 16, 32]


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([1200.0, 700.0])
    wh = torch.rand(n, 2, generator=generator) ** 2 * 500 + 4
    return torch.cat([xy, xy + wh], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    for n in (1000, 5000):
        boxes, scores = random_boxes(n, g), torch.rand(n, generator=g)
        print(
            f"nms {n} boxes iou 0.7: {median_ms(lambda b=boxes, s=scores: nms(b, s, 0.7), args.repeats):.1f} ms"
        )
    boxes, scores = random_boxes(5000, g), torch.rand(5000, generator=g)
    levels = torch.arange(5000) // 1000  # the RPN's NMS: 1000 boxes per level, class-wise by level
    ms = median_ms(lambda: batched_nms(boxes, scores, levels, 0.7), args.repeats)
    print(f"batched_nms 5000 boxes in 5 levels iou 0.7: {ms:.1f} ms")
    feats = [torch.randn(1, 256, 800 // s, 1344 // s, generator=g) for s in STRIDES]
    for k, size in ((1000, (7, 7)), (100, (14, 14))):
        rois = torch.cat([torch.zeros(k, 1), random_boxes(k, g)], 1)
        ms = median_ms(lambda r=rois, o=size: multi_level_roi_align(feats, r, o, STRIDES), args.repeats)
        print(f"multi-level roi_align {k} rois x 256 channels at {size}: {ms:.1f} ms")
    probs, boxes = torch.rand(100, 28, 28, generator=g), random_boxes(100, g)
    ms = median_ms(lambda: paste_masks(probs, boxes, (800, 1333)), args.repeats)
    print(f"paste_masks 100 masks into 800x1333: {ms:.1f} ms")


if __name__ == "__main__":
    main()

"""End-to-end latency of Mask R-CNN Swin-T (mmdet's 1x config) at 800x1333, batch 1, and where the time goes.

Random weights, with biases set so the heads see realistic numbers of boxes: the RPN keeps its 1000 proposals
(objectness logits spread by a random per-anchor bias) and the box classifier puts some classes above the 0.05
score threshold, so up to 100 detections reach the mask head. Each pass is timed part by part in the
detector's own order: backbone, neck (FPN), RPN head, RPN post-processing (top-k, decoding, NMS), RoI box head
(RoIAlign + fcs), box post-processing (decoding, class-wise NMS), mask head (RoIAlign + convs), mask pasting.
The end-to-end figure is ``model(pixels, metas)`` itself, timed separately.

    python benchmarks/detection.py [--repeats 5] [--threads N] [--preset mask_rcnn_swin_t_1x_coco]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from swinkit.models.detection.mask_rcnn import MaskRCNN, create_mask_rcnn
from swinkit.models.detection.structures import ImageMeta

HEIGHT, WIDTH = 800, 1344  # 800x1333 padded to a multiple of 32, as DetectionPreprocessor does
META = ImageMeta((480, 800), (800, 1333), (1333 / 800, 800 / 480))


def biased(model: MaskRCNN, seed: int = 0) -> MaskRCNN:
    """Spread the RPN objectness per anchor and give the box classifier confident classes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rpn = model.rpn_head.rpn_cls
        rpn.weight.add_(0.05 * torch.randn(rpn.weight.shape, generator=generator))
        cls = model.roi_head.bbox_head.fc_cls
        cls.weight.mul_(50)  # logits vary from RoI to RoI
        cls.bias[:-1].copy_(torch.randn(cls.bias.shape[0] - 1, generator=generator))
        cls.bias[-1] = 2.0  # background still wins for most
    return model.eval()


def _timed(times: dict[str, list[float]], name: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    times[name].append(time.perf_counter() - start)
    return out


def parts_pass(model: MaskRCNN, pixels: torch.Tensor, times: dict[str, list[float]]) -> tuple[int, int]:
    """One pass part by part; returns (proposals, detections)."""
    metas = [META]
    roi = model.roi_head
    backbone = _timed(times, "backbone", model.backbone, pixels)
    features = _timed(times, "neck", model.neck, backbone)
    scores, deltas = _timed(times, "rpn head", model.rpn_head, features)
    anchors = model.rpn_head.anchors(features)
    proposals = _timed(
        times, "rpn post-processing", model.rpn_head.predict_by_feat, scores, deltas, anchors, metas
    )
    cls_scores, box_deltas = _timed(times, "roi box head", roi.box_logits, features, proposals)
    detections = _timed(
        times, "box post-processing", roi.boxes_by_feat, proposals, cls_scores, box_deltas, metas, False
    )
    logits = _timed(times, "mask head", roi.mask_logits, features, detections)
    detections = _timed(times, "mask pasting", roi.masks_by_feat, detections, logits, metas)
    return proposals[0].shape[0], len(detections[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mask_rcnn_swin_t_1x_coco")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = biased(create_mask_rcnn(args.preset))
    pixels = torch.randn(1, 3, HEIGHT, WIDTH)
    times: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        model(pixels, [META])  # warm-up: caches, allocator
        counts = [parts_pass(model, pixels, times) for _ in range(args.repeats)]
        for _ in range(args.repeats):
            _timed(times, "end to end", model, pixels, [META])
    total = statistics.median(times.pop("end to end"))
    parts = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.preset} at {HEIGHT}x{WIDTH}, batch 1, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    print(f"proposals / detections per pass: {sorted(set(counts))}")
    print(f"end to end: {total * 1000:.0f} ms (median)")
    summed = sum(parts.values())
    for name, seconds in parts.items():
        print(f"  {name:<20} {seconds * 1000:8.1f} ms  {100 * seconds / summed:5.1f}%")
    print(f"  {'sum of parts':<20} {summed * 1000:8.1f} ms")


if __name__ == "__main__":
    main()

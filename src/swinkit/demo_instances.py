"""``make demo-instances``: Mask R-CNN fine-tuning on generated fridgeObjects-style instance data, on CPU.

1. Scenes of fridge objects (cans as discs, cartons as rectangles, bottles as tall rounded bars; one colour
   per class, with shading) on noisy backgrounds are written with their Azure ML instance-segmentation JSONL
   (normalised boxes and polygons), a training and a held-out file, as the seed's fridgeObjects set;
2. ``mask_rcnn_swin_micro`` is trained from scratch with mmdetection's 1x recipe shortened (AdamW, warm-up,
   step decay; keep-ratio resize and flips), validated each epoch on COCO mask AP;
3. the held-out scenes are evaluated (COCO box and mask AP, per-class AP, precision-recall plots);
4. held-out scenes are predicted into pictures with boxes, masks, labels and scores.

Run ``python -m swinkit.demo_instances [--output DIR] [--epochs N] [--images N]``; outputs go to
``./demo_instances_output/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from swinkit.cli import main as swinkit

CLASSES = ("can", "carton", "milk_bottle", "water_bottle")
COLOURS = ((200, 40, 40), (230, 200, 60), (235, 235, 235), (60, 110, 220))
SIZE = 96  # scene side in pixels


def _outline(label: int, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) integer outline of one object of class ``label`` at the origin (x, y)."""
    if label == 0:  # a can seen from above: a disc
        r = int(rng.integers(9, 15))
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([r + r * np.cos(t), r + r * np.sin(t)], 1).round().astype(np.int32)
    if label == 1:  # a carton: a box
        w, h = rng.integers(18, 30, 2)
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.int32)
    w, h = (int(rng.integers(8, 12)), int(rng.integers(30, 42)))  # a bottle: a tall bar with a neck
    neck = w // 3
    return np.array(
        [[neck, 0], [w - neck, 0], [w - neck, 6], [w, 10], [w, h], [0, h], [0, 10], [neck, 6]], np.int32
    )


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """(SIZE, SIZE, 3) uint8 scene and its objects as Azure ML JSONL labels (normalised coordinates)."""
    pixels = rng.normal(110, 18, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8)
    occupied = np.zeros((SIZE, SIZE), bool)
    labels = []
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(0, len(CLASSES)))
        outline = _outline(label, rng)
        span = outline.max(0) + 1  # (w, h)
        offset = rng.integers(0, SIZE - span)  # (x, y)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.fillPoly(mask, [outline + offset], 1)
        if (mask.astype(bool) & occupied).any():
            continue  # no overlaps: each polygon is the object's whole visible outline
        occupied |= mask.astype(bool)
        shade = np.array(COLOURS[label]) * rng.uniform(0.8, 1.0)
        pixels[mask.astype(bool)] = shade.clip(0, 255).astype(np.uint8)
        (x0, y0), (x1, y1) = offset, offset + span
        points = ((outline + offset) / SIZE).ravel().round(4).tolist()
        labels.append({
            "label": CLASSES[label], "topX": x0 / SIZE, "topY": y0 / SIZE, "bottomX": x1 / SIZE,
            "bottomY": y1 / SIZE, "isCrowd": 0, "polygon": [points],
        })  # fmt: skip
    return pixels, labels


def write_scenes(root: Path, count: int, held_out: int, seed: int = 0) -> tuple[Path, Path]:
    """``count`` training and ``held_out`` held-out scenes under ``root/images``, with their JSONL files."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    files = {"train": root / "train.jsonl", "held_out": root / "held_out.jsonl"}
    lines: dict[str, list[str]] = {"train": [], "held_out": []}
    for i in range(count + held_out):
        pixels, labels = _scene(rng)
        name = f"images/scene{i:04d}.png"
        Image.fromarray(pixels).save(root / name)
        details = {"format": "png", "width": SIZE, "height": SIZE}
        split = "train" if i < count else "held_out"
        lines[split].append(json.dumps({"image_url": name, "image_details": details, "label": labels}))
    for split, path in files.items():
        path.write_text("\n".join(lines[split]) + "\n")
    return files["train"], files["held_out"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swinkit.demo_instances", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, default=Path("demo_instances_output"))
    parser.add_argument("--images", type=int, default=160, help="training scenes (and a quarter held out)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.output
    run, evaluation, pictures = out / "run", out / "held_out_eval", out / "predictions"
    for stale in (run, evaluation, pictures):
        shutil.rmtree(stale, ignore_errors=True)  # the demo's own earlier outputs
    started = time.perf_counter()
    print(
        f"1/4 writing {args.images} + {args.images // 4} fridge scenes (Azure ML JSONL) under {out / 'data'}"
    )
    train, held_out = write_scenes(out / "data", args.images, max(1, args.images // 4))
    steps = args.epochs * (args.images * 4 // 5 // 2)
    milestones = f"[{max(1, args.epochs * 2 // 3)},{max(1, args.epochs * 11 // 12)}]"
    print("2/4 training mask_rcnn_swin_micro from scratch (mmdet 1x recipe, shortened)")
    code = swinkit([
        "train", "--task", "instance_segmentation", "--data", str(train), "--preset", "mask_rcnn_swin_micro",
        "--output", str(run), "--epochs", str(args.epochs), "--batch-size", "2", "--lr", "1e-3",
        "--set", f"det.scale=[{SIZE},{SIZE}]", "--set", f"schedule.warmup_iters={max(1, steps // 15)}",
        "--set", f"schedule.milestones={milestones}",
    ])  # fmt: skip
    if code != 0:
        return code
    print(f"3/4 evaluating the held-out scenes (COCO AP) into {evaluation}")
    code = swinkit(["evaluate", "--model", str(run), "--data", str(held_out), "--output", str(evaluation)])
    if code != 0:
        return code
    print(f"4/4 drawing predictions of held-out scenes into {pictures}")
    scenes = sorted((out / "data" / "images").glob("scene*.png"))[args.images : args.images + 8]
    code = swinkit(["predict", "--model", str(run), *map(str, scenes), "--visualize", str(pictures),
                    "--score-threshold", "0.5"])  # fmt: skip
    report = json.loads((evaluation / "metrics.json").read_text())
    shown = ", ".join(
        f"{k} {report[k]:.3f}" for k in ("segm_mAP", "segm_mAP_50", "bbox_mAP", "bbox_mAP_50") if k in report
    )
    print(f"\nheld-out {shown}; whole demo {time.perf_counter() - started:.0f} s")
    print(f"serve it with:  swinkit serve --model {run}")
    return code


if __name__ == "__main__":
    sys.exit(main())

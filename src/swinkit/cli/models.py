"""``swinkit models``: the presets of every task, one table each (``--task`` picks one): classification with
size, cost, windows, classes, hub id and preprocessing; ``detection`` (Mask R-CNN, Faster R-CNN) at 800x1333;
``semantic_segmentation``: the UPerNet presets (backbone, pretraining, crop, parameters with the
auxiliary head, GFLOPs at 512x2048 as mmseg's ``get_flops.py`` and the Swin paper count them, mIoU, hub id)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from tqdm import tqdm

from swinkit.flops import count_flops
from swinkit.models.detection.config import DETECTION_PRESETS, DetectionPreset
from swinkit.models.factory import build_model
from swinkit.models.segmentation import SEGMENTATION_PRESETS, SegmentationPreset, build_upernet, upernet_flops
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import PRESETS, Preprocessing, Preset

HELP = "list the model presets with parameters and GFLOPs (multiply-adds) at their native size"

COLUMNS = ("name", "v", "params", "GFLOPs", "size", "windows", "classes", "preprocessing", "hub id")
SEGMENTATION_COLUMNS = (
    "name",
    "backbone",
    "pretrain",
    "crop",
    "params",
    "GFLOPs",
    "mIoU",
    "ms+flip",
    "hub id",
)
SEGMENTATION_FLOPS_SIZE = (512, 2048)  # (H, W) input of mmseg's get_flops.py for the ADE20K table
TASKS = ("all", "classification", "semantic_segmentation", "detection")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="only presets whose name contains this text")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="all",
        help="which task's presets to list (default: every task, one table each)",
    )


def describe_preprocessing(prep: Preprocessing) -> str:
    """E.g. "resize 256 + center crop 224, bicubic" or "resize 384, bicubic"."""
    height, width = prep.image_size
    size = f"{height}" if height == width else f"{height}x{width}"
    if prep.crop_pct is None:
        return f"resize {size}, {prep.interpolation}"
    return f"resize {int(min(height, width) / prep.crop_pct)} + center crop {size}, {prep.interpolation}"


def describe_preset(preset: Preset) -> dict[str, Any]:
    """One preset's row: architecture, parameter count and multiply-adds at the native size.

    The model is built on the ``meta`` device: no weights are allocated and nothing is downloaded.
    """
    config = preset.config
    with torch.device("meta"):
        model = build_model(ClassifierConfig(config, num_classes=preset.num_classes)).eval()
    flops = count_flops(model, config.image_size)
    return {
        "name": preset.name,
        "version": config.version,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": flops,
        "gflops": round(flops / 1e9, 3),
        "image_size": config.image_size,
        "window_size": config.window_size,
        "stage_window_sizes": list(config.stage_window_sizes),
        "pretrained_window_sizes": list(config.pretrained_window_sizes),
        "num_classes": preset.num_classes,
        "hub_id": preset.hub_id,
        "preprocessing": describe_preprocessing(preset.preprocessing),
        "description": preset.description,
    }


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    windows = row["stage_window_sizes"]
    pretrained = [w for w in row["pretrained_window_sizes"] if w]
    window = f"{max(pretrained)}to{row['window_size']}" if pretrained else str(row["window_size"])
    if len(set(windows)) > 1:
        window += f" ({','.join(map(str, windows))})"
    return (
        row["name"],
        str(row["version"]),
        f"{row['params'] / 1e6:.1f}M",
        f"{row['gflops']:.1f}" if row["gflops"] >= 1 else f"{row['gflops']:.3f}",
        str(row["image_size"]),
        window,
        str(row["num_classes"]),
        row["preprocessing"],
        row["hub_id"] or "-",
    )


def describe_segmentation_preset(preset: SegmentationPreset) -> dict[str, Any]:
    """One UPerNet preset's row; the model is built on the ``meta`` device (nothing allocated or downloaded)."""
    config = preset.config
    with torch.device("meta"):
        model = build_upernet(config)
    flops = upernet_flops(config, SEGMENTATION_FLOPS_SIZE)
    backbone = config.backbone
    return {
        "name": preset.name,
        "backbone": f"Swin embed {backbone.embed_dim}, depths {list(backbone.depths)}, window {backbone.window_size}",
        "pretrain": preset.pretrain,
        "pretrain_image_size": preset.pretrain_image_size,
        "crop_size": preset.crop_size,
        "num_classes": config.num_classes,
        "params": sum(p.numel() for p in model.parameters()),  # with the auxiliary head, as mmseg's table
        "flops": flops,
        "gflops": round(flops / 1e9, 3),
        "miou": preset.miou,
        "miou_ms_flip": preset.miou_ms_flip,
        "hub_id": preset.hub_id,
        "checkpoint_url": preset.checkpoint_url,
        "description": preset.description,
    }


def _segmentation_cells(row: dict[str, Any]) -> tuple[str, ...]:
    pretrain = (
        row["pretrain"] if row["pretrain"] == "none" else f"{row['pretrain']} {row['pretrain_image_size']}"
    )
    return (
        row["name"],
        row["backbone"],
        pretrain,
        str(row["crop_size"]),
        f"{row['params'] / 1e6:.1f}M",
        f"{row['gflops']:.1f}",
        "-" if row["miou"] is None else f"{row['miou']:.2f}",
        "-" if row["miou_ms_flip"] is None else f"{row['miou_ms_flip']:.2f}",
        row["hub_id"] or "-",
    )


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS, cells=_cells) -> str:
    """A plain aligned text table of :func:`describe_preset` rows (or of another kind, with its cells)."""
    lines = [columns, *(cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in lines) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    groups = _listed(args.task, args.filter)
    if not any(presets for _, presets in groups):
        kind = "" if args.task == "all" else f" among the {args.task} presets"
        raise ValueError(f"no preset name contains {args.filter!r}{kind}")
    tables, rows = [], []
    for task, presets in groups:
        describe, columns, cells = _LISTINGS[task]
        group = [describe(p) for p in tqdm(presets, desc="counting", leave=False, disable=None)]
        rows += [{"task": task, **row} for row in group]
        if group:
            tables.append((task, format_table(group, columns, cells)))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif len(tables) == 1:
        print(tables[0][1])
    else:
        print("\n\n".join(f"# {task}\n{table}" for task, table in tables))
    return 0


DETECTION_SIZE = (800, 1333)  # (H, W) the detection rows are counted at (mmdet's test scale for 4:3 images)


def describe_detection_preset(preset: DetectionPreset) -> dict[str, Any]:
    """A detection preset's row: parameters, and multiply-adds at 800x1333 with 1000 proposals and 100
    detections (:func:`swinkit.models.detection.mask_rcnn.mask_rcnn_flops`); built on the ``meta`` device."""
    from swinkit.models.detection.mask_rcnn import build_mask_rcnn, mask_rcnn_flops

    config = preset.config
    with torch.device("meta"):
        params = sum(p.numel() for p in build_mask_rcnn(config).parameters())
    flops = mask_rcnn_flops(config, DETECTION_SIZE)
    windows = [config.backbone.window_size] * config.backbone.num_stages  # detection convention
    return {
        "name": preset.name,
        "version": config.backbone.version,
        "params": params,
        "flops": flops,
        "gflops": round(flops / 1e9, 3),
        "image_size": "x".join(map(str, DETECTION_SIZE)),
        "window_size": config.backbone.window_size,
        "stage_window_sizes": windows,
        "pretrained_window_sizes": list(config.backbone.pretrained_window_sizes),
        "num_classes": config.num_classes,
        "hub_id": None,
        "preprocessing": f"keep-ratio resize {config.test_scale[0]}x{config.test_scale[1]}, bilinear, pad {config.pad_size_divisor}",
        "description": preset.description,
        "box_ap": preset.box_ap,
        "mask_ap": preset.mask_ap,
        "checkpoint_url": preset.checkpoint_url,
    }


_LISTINGS = {
    "classification": (describe_preset, COLUMNS, _cells),
    "semantic_segmentation": (describe_segmentation_preset, SEGMENTATION_COLUMNS, _segmentation_cells),
    "detection": (describe_detection_preset, COLUMNS, _cells),
}
_SOURCES = {
    "classification": PRESETS,
    "semantic_segmentation": SEGMENTATION_PRESETS,
    "detection": DETECTION_PRESETS,
}


def _listed(task: str, text: str) -> list[tuple[str, list[Any]]]:
    """(task, presets whose name contains ``text``) for ``task`` or, with "all", for every task."""
    tasks = list(_SOURCES) if task == "all" else [task]
    return [(t, [p for name, p in sorted(_SOURCES[t].items()) if text in name]) for t in tasks]

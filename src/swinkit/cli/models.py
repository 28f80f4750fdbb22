"""``swinkit models``: the presets with their size, cost, windows, classes, hub id and preprocessing;
``--task semantic_segmentation``: the UPerNet presets (backbone, pretraining, crop, parameters with the
auxiliary head, GFLOPs at 512x2048 as mmseg's ``get_flops.py`` and the Swin paper count them, mIoU, hub id)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from tqdm import tqdm

from swinkit.flops import count_flops
from swinkit.models.factory import build_model
from swinkit.models.segmentation import SEGMENTATION_PRESETS, SegmentationPreset, build_upernet, upernet_flops
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
TASKS = ("classification", "semantic_segmentation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="only presets whose name contains this text")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="which presets to list (default classification)",
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
        model = build_model(config).eval()
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
        "num_classes": config.num_classes,
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
    segmentation = args.task == "semantic_segmentation"
    source = SEGMENTATION_PRESETS if segmentation else PRESETS
    presets = [p for name, p in sorted(source.items()) if args.filter in name]
    if not presets:
        raise ValueError(f"no preset name contains {args.filter!r} among the {args.task} presets")
    describe = describe_segmentation_preset if segmentation else describe_preset
    rows = [describe(p) for p in tqdm(presets, desc="counting", leave=False, disable=None)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif segmentation:
        print(format_table(rows, SEGMENTATION_COLUMNS, _segmentation_cells))
    else:
        print(format_table(rows))
    return 0

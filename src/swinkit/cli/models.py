"""``swinkit models``: the presets with their size, cost, windows, classes, hub id and preprocessing."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from tqdm import tqdm

from swinkit.flops import count_flops
from swinkit.models.factory import build_model
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import PRESETS, Preprocessing, Preset

HELP = "list the model presets with parameters and GFLOPs (multiply-adds) at their native size"

COLUMNS = ("name", "v", "params", "GFLOPs", "size", "windows", "classes", "preprocessing", "hub id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="only presets whose name contains this text")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


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


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain aligned text table of :func:`describe_preset` rows."""
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    presets = [p for name, p in sorted(PRESETS.items()) if args.filter in name]
    if not presets:
        raise ValueError(f"no preset name contains {args.filter!r}")
    rows = [describe_preset(p) for p in tqdm(presets, desc="counting", leave=False, disable=None)]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0

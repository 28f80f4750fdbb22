"""``swinkit predict``: run a saved model of any task on image files (or folders of them).

The task comes from the saved model (``swinkit.inference.load_predictor``). With ``--output FILE.jsonl``
(``-`` for standard output; a device or FIFO is written through): one JSON object per image, in input order,
the task's Azure ML result plus the path, e.g. for classification ``{"image": PATH, "probs": [...],
"labels": [...]}`` (every label, in label order), or ``{"image": PATH, "error": "..."}`` for a file that
cannot be read. Without it: each result's lines (classification: the top labels) as a table. Exit status 1
when some image could not be read (the others are still predicted).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from swinkit.batch import iter_image_files
from swinkit.checkpoint_io import open_output
from swinkit.cli.options import add_result_limits, add_runtime_flags, add_task_options, task_options
from swinkit.data.decode import ImageDecodeError, decode_image
from swinkit.inference import load_predictor
from swinkit.tasks.base import TaskPredictor, TaskResult

HELP = (
    "run a saved model on images (top labels, or detected objects): JSONL in the Azure ML schema, or a table"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id, HF folder, checkpoint file or preset name")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    add_result_limits(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--output", type=Path, default=None, help="write JSONL here instead of a table ('-': standard output)"
    )
    parser.add_argument(
        "--visualize",
        type=Path,
        default=None,
        help="write an annotated PNG per image here (segmentation: also the label map, <stem>_labels.png)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    add_task_options(parser)
    add_runtime_flags(parser)


def expand_images(arguments: Sequence[str]) -> list[Path]:
    """Files as given, folders replaced by the image files below them (sorted)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = list(iter_image_files(path))
            if not found:
                raise ValueError(f"{path} holds no image files")
            paths.extend(found)
        else:
            paths.append(path)  # a missing file becomes an error row, like an unreadable one
    return paths


def predict(
    predictor: TaskPredictor, paths: Sequence[Path], *, visualize: Path | None
) -> Iterator[tuple[Path, TaskResult | None, str | None]]:
    """(path, result or None, error or None) per path, in order, a batch at a time."""
    names: set[str] = set()
    for start in range(0, len(paths), predictor.batch_size):
        decoded: list[tuple[Path, Any, str | None]] = []
        for path in paths[start : start + predictor.batch_size]:
            try:
                decoded.append((path, decode_image(path), None))
            except ImageDecodeError as e:
                decoded.append((path, None, str(e)))
        pixels = [predictor.prepare(image) for _, image, error in decoded if error is None]
        results = iter(predictor.infer(pixels) if pixels else [])
        for path, image, error in decoded:
            if error is not None:
                yield path, None, error
                continue
            result = next(results)
            if visualize is not None:
                result.save_image(image, visualize / _unique_name(path, names))
            yield path, result, None


def _unique_name(path: Path, used: set[str]) -> str:
    name, n = f"{path.stem}.png", 1
    while name in used:
        name, n = f"{path.stem}_{n}.png", n + 1
    used.add(name)
    return name


def _print_table(rows: Iterator[tuple[Path, TaskResult | None, str | None]], stream: TextIO) -> int:
    failures = 0
    for path, result, error in rows:
        print(str(path), file=stream)
        if error is not None:
            failures += 1
            print(f"  error: {error}", file=stream)
            continue
        for line in result.lines():
            print(f"  {line}", file=stream)
    return failures


def _write_jsonl(rows: Iterator[tuple[Path, TaskResult | None, str | None]], output: Path) -> int:
    failures = 0
    with open_output(output, "w", ".jsonl") as f:
        for path, result, error in rows:
            row = {"image": str(path), "error": error} if error else {"image": str(path), **result.to_azure()}
            failures += error is not None
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return failures


def run(args: argparse.Namespace) -> int:
    paths = expand_images(args.images)
    predictor = load_predictor(
        args.model,
        batch_size=args.batch_size,
        device=args.device,
        top_k=args.top_k,
        threshold=args.threshold,
        **task_options(args),
        runtime=args.runtime,
        precision=args.precision,
        prepack=args.torch_prepack,
    )
    if args.visualize is not None:
        args.visualize.mkdir(parents=True, exist_ok=True)
    rows = predict(predictor, paths, visualize=args.visualize)
    failures = _write_jsonl(rows, args.output) if args.output else _print_table(rows, sys.stdout)
    if failures:
        print(f"swinkit predict: {failures} of {len(paths)} images could not be read", file=sys.stderr)
    return 1 if failures else 0

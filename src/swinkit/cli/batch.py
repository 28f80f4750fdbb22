"""``swinkit batch``: run a saved model of any task on any number of images into a resumable JSONL file.

Re-running the same command after an interruption skips what the output already holds; see
``swinkit.batch`` for the input formats (folder, JSONL, CSV with paths or base64 images) and the row schema.
Under ``torchrun`` each process scores its share of the inputs and rank 0 merges them into ``--output``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from swinkit.batch import BatchInterrupted, BatchSummary, run_batch
from swinkit.cli.options import add_result_limits, add_runtime_flags, add_task_options, task_options
from swinkit.engine.distributed import init_distributed, shutdown
from swinkit.inference import load_predictor

HELP = "predict a folder, JSONL or CSV of images into a resumable JSONL file (any task's saved model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id, HF folder, checkpoint file or preset name")
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        help="a folder, a .jsonl (path/image_url/image/id) or a .csv (path or base64 image)",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="JSONL file (an existing one is resumed), or - / a FIFO / a device: written through, not resumable",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (memory grows with it)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="decoding processes (0: decode inline)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    add_result_limits(parser)
    add_task_options(parser)
    add_runtime_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh: discard an existing output (any model's)"
    )
    parser.add_argument("--retry-errors", action="store_true", help="score again the inputs of error rows")


def _report(summary: BatchSummary, output: Path) -> int:
    print(
        f"{summary.written} rows written to {output} ({summary.errors} errors); "
        f"{summary.skipped} were there from an earlier run",
        file=sys.stderr,
    )
    if summary.all_failed:
        print(
            f"swinkit batch: error: every one of the {summary.written} inputs failed "
            f"(first: {summary.first_error})",
            file=sys.stderr,
        )
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.input.exists():
        raise FileNotFoundError(f"no such input: {args.input}")
    context = init_distributed(args.device)
    try:
        device = str(context.device) if context.distributed else args.device
        predictor = load_predictor(
            args.model,
            batch_size=args.batch_size,
            device=device,
            top_k=args.top_k,
            threshold=args.threshold,
            **task_options(args),
            runtime=args.runtime,
            precision=args.precision,
            prepack=args.torch_prepack,
        )
        summary = run_batch(
            predictor,
            args.input,
            args.output,
            num_workers=args.workers,
            progress=not args.no_progress and context.is_main,
            model_name=str(args.model),
            overwrite=args.overwrite,
            retry_errors=args.retry_errors,
            context=context,
        )
    except BatchInterrupted as e:
        print(
            f"interrupted: {e.rows} rows written to {e.output}; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        shutdown(context)
    return _report(summary, args.output) if context.is_main else 0

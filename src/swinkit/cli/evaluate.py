"""``swinkit evaluate``: metrics and plots of a trained model on a labelled image set."""

from __future__ import annotations

import argparse
import json

from swinkit.cli.options import add_task_options, task_options

HELP = "evaluate a model on labelled images (class folders, CSV, JSONL; a detector: COCO json or Azure JSONL; a segmenter: label-map pairs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a run folder, HF folder, hub id or checkpoint file")
    parser.add_argument(
        "--data",
        required=True,
        help="a folder of class folders, a CSV or a JSONL file; for a detector a COCO .json or an Azure ML .jsonl",
    )
    parser.add_argument("--output", help="write metrics.json and plots/ here (default: print only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="multi-label decision threshold (a detector uses its own rule)",
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    add_task_options(parser)


def run(args: argparse.Namespace) -> int:
    from swinkit.engine.evaluate import evaluate_model
    from swinkit.inference import task_of_source

    if args.output == "-":
        raise ValueError(
            "--output names a folder for metrics.json and plots/, and '-' (standard output) is not one"
        )
    report = evaluate_model(
        args.model,
        args.data,
        output=args.output,
        batch_size=args.batch_size,
        threshold=args.threshold,
        num_workers=args.num_workers,
        device=args.device,
        **task_options(args),
    )
    print(task_of_source(args.model).report_text(report))
    if args.output:
        print(f"metrics and plots written to {args.output}")
    else:
        shown = {k: v for k, v in report.items() if k not in ("per_class", "confusion_matrix")}
        print(json.dumps(shown, indent=2))
    return 0

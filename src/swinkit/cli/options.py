"""Command-line flags that predict, batch and evaluate pass on to the task: the result limits every task
takes, and task-specific settings
(``load_predictor(**options)``, ``evaluate_model(**options)``); a task that does not take one refuses it."""

from __future__ import annotations

import argparse
from typing import Any


def add_result_limits(parser: argparse.ArgumentParser) -> None:
    """``--top-k``/``--max-detections`` and ``--threshold``/``--score-threshold``: the predictor's ``top_k`` and
    ``threshold``, whatever the task (labels of a classifier, objects of a detector)."""
    parser.add_argument(
        "--top-k",
        "--max-detections",
        dest="top_k",
        type=int,
        default=None,
        help="labels (classification, default 5) or objects (detection, default the model's 100) per image",
    )
    parser.add_argument(
        "--threshold",
        "--score-threshold",
        dest="threshold",
        type=float,
        default=None,
        help="minimum probability or score (multi-label default 0.5; detection: the model's 0.05)",
    )


def add_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("whole", "slide"),
        help="semantic segmentation: whole-image or sliding-window inference",
    )
    parser.add_argument(
        "--tta", action="store_true", help="semantic segmentation: multi-scale + flip testing"
    )


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task-specific settings given on the command line (those left unset are not passed)."""
    options = {"mode": args.mode, "tta": args.tta or None}
    return {name: value for name, value in options.items() if value is not None}


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision`` (``swinkit predict`` and ``batch``)."""
    from swinkit.runtime.backends import PRECISIONS, RUNTIMES

    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=None, help="torch, openvino or onnxruntime (default: torch, "
        "or an export folder's own)",
    )  # fmt: skip
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32, bf16 or int8 (default fp32, or the export's)",
    )
    parser.add_argument(
        "--torch-prepack",
        action="store_true",
        help="torch fp32 on the CPU: run linear layers on weights oneDNN prepacked once (faster at small "
        "batches, outputs within 1e-5; the weights held twice)",
    )

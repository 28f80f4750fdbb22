"""Command-line flags of task-specific settings that predict, batch and evaluate pass on to the task
(``load_predictor(**options)``, ``evaluate_model(**options)``); a task that does not take one refuses it."""

from __future__ import annotations

import argparse
from typing import Any


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

"""``swinkit convert-data SRC DST``: instance annotations from COCO ``.json`` to Azure ML ``.jsonl`` or back.

The formats are told by the suffixes; see ``swinkit.data.instances`` for both and the checks every record
passes, and ``swinkit.data.instance_formats`` for what a conversion keeps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "convert instance annotations between COCO (.json) and Azure ML JSONL (.jsonl)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a COCO instances .json or an Azure ML .jsonl file")
    parser.add_argument("destination", type=Path, help="the file to write: .json (COCO) or .jsonl (Azure ML)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out bad objects and images (counted) instead of stopping",
    )
    parser.add_argument(
        "--no-check-files",
        action="store_true",
        help="do not open the images to check they exist and their size",
    )


def run(args: argparse.Namespace) -> int:
    from swinkit.data.instance_formats import convert_instances

    dataset = convert_instances(
        args.source, args.destination, skip_invalid=args.skip_bad, check_files=not args.no_check_files
    )
    objects = sum(len(image) for image in dataset.images)
    skipped = f"; {dataset.skipped} bad records skipped" if dataset.skipped else ""
    print(f"{len(dataset)} images, {objects} objects, {len(dataset.labels)} labels written to "
          f"{args.destination}{skipped}", file=sys.stderr)  # fmt: skip
    return 0

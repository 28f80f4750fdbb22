"""``swinkit export SRC DST --format onnx|openvino``: a saved model as an ONNX or OpenVINO IR folder.

DST then loads like any saved model (``swinkit predict --model DST``, ``swinkit serve --model DST``,
``Predictor.from_pretrained(DST)``) and runs on its runtime: ONNX Runtime for onnx, OpenVINO for openvino.
``--precision int8`` quantizes on ``--calibration-data`` images and checks the result against fp32 (on
``--validation-data`` when given): the export is refused past the bounds (classification: top-1 agreement at
least 0.98, probabilities within 0.1; semantic segmentation: pixel agreement of the label maps at least 0.98
and their mIoU against the fp32 maps at least 0.95; detection and instance segmentation: COCO box AP against the
fp32 detections at least 0.8 and box AP50 at least 0.9, mask AP at least 0.8) unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swinkit.runtime.backends import PRECISIONS
from swinkit.runtime.export import FORMATS, OPSET
from swinkit.runtime.quantize import MAX_CALIBRATION_IMAGES

HELP = "export a saved model to ONNX or OpenVINO IR (fp32, bf16 or calibrated int8) that predict/serve load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="hub id, HF folder, checkpoint file or preset name")
    parser.add_argument("destination", type=Path, help="the export folder to write (new, empty or an export)")
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help=f"onnx (opset {OPSET}) or openvino IR"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="fp32, bf16 (openvino) or int8 (default fp32)"
    )
    parser.add_argument("--calibration-data", type=Path, help="folder of images to calibrate int8 on")
    parser.add_argument("--validation-data", type=Path, help="folder of images to check agreement on")
    parser.add_argument(
        "--max-images", type=int, default=MAX_CALIBRATION_IMAGES, help="images read from each folder at most"
    )
    parser.add_argument("--min-agreement", type=float, help="lowest top-1 agreement with fp32 (default 0.98)")
    parser.add_argument("--max-prob-diff", type=float, help="largest probability difference (default 0.1)")
    parser.add_argument(
        "--min-pixel-agreement",
        type=float,
        help="segmentation: lowest pixel agreement with fp32 (default 0.98)",
    )
    parser.add_argument(
        "--min-miou", type=float, help="segmentation: lowest mIoU against the fp32 label maps (default 0.95)"
    )
    parser.add_argument(
        "--min-box-ap", type=float, help="detection: lowest box AP against the fp32 detections (default 0.8)"
    )
    parser.add_argument(
        "--min-mask-ap", type=float, help="instance segmentation: lowest mask AP against fp32's (default 0.8)"
    )
    parser.add_argument("--force", action="store_true", help="write an int8 graph past the agreement bounds")


def run(args: argparse.Namespace) -> int:
    from swinkit.runtime.exporter import ExportRequest, export_model

    bounds = {
        "top1_agreement": args.min_agreement,
        "max_prob_diff": args.max_prob_diff,
        "pixel_agreement": args.min_pixel_agreement,
        "miou_vs_fp32": args.min_miou,
        "bbox_AP": args.min_box_ap,
        "segm_AP": args.min_mask_ap,
    }
    request = ExportRequest(
        args.format,
        args.precision,
        calibration_data=args.calibration_data,
        validation_data=args.validation_data,
        force=args.force,
        bounds={name: value for name, value in bounds.items() if value is not None},
        max_images=args.max_images,
    )
    info = export_model(args.source, args.destination, request)
    print(f"{args.destination}: {info.format} {info.precision} ({info.graph_file}, opset {info.opset})")
    if info.agreement is not None:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in info.agreement.items() if isinstance(v, float))
        verdict = "within bounds" if info.agreement["passed"] else "PAST THE BOUNDS (forced)"
        print(
            f"agreement with fp32 on {info.agreement['images']} images: {figures} ({verdict})",
            file=sys.stderr,
        )
    return 0

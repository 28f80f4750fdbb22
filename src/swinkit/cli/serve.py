"""``swinkit serve --model SRC``: the model as a real-time HTTP endpoint (Azure ML scoring schema).

Every flag is also a ``SWINKIT_<NAME>`` environment variable and a key of the optional ``--config``
YAML/JSON file; flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when serving: every other command starts without fastapi and uvicorn
    from swinkit.serve.settings import ServeSettings

HELP = "serve a model as a real-time HTTP endpoint (POST /score, Azure ML schema)"

# (flag, type, help); the setting is the flag's name with underscores
_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("--model", str, "hub id, Hugging Face folder, checkpoint file or preset name"),
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "port to listen on (default 8000)"),
    ("--device", str, "torch device (default cpu)"),
    ("--runtime", str, "torch, openvino or onnxruntime (default: torch, or an export folder's own)"),
    ("--precision", str, "fp32, bf16 or int8 (default: fp32, or an export folder's own)"),
    ("--openvino-hint", str, "OpenVINO performance hint, LATENCY or THROUGHPUT (default LATENCY)"),
    ("--torch-threads", int, "intra-op threads of torch (default: torch's, the core count)"),
    ("--max-batch-size", int, "images run through the model together at most (default 16)"),
    ("--inference-workers", int, "batches run at once, each in its own thread (default 1)"),
    ("--score-threshold", float, "detection: lowest object score answered (default: the model's, 0.05)"),
    ("--max-detections", int, "detection: objects answered per image at most (default: the model's, 100)"),
    ("--mode", str, "semantic segmentation: whole or slide (sliding-window) inference (default whole)"),
    ("--max-delay-ms", float, "how long a batch waits for more images (default 10)"),
    ("--max-queue-size", int, "images that may wait for the model before 503 (default 256)"),
    ("--max-concurrent-requests", int, "requests handled at once before 503 (default 64)"),
    ("--max-images-per-request", int, "images in one request before 413 (default 32)"),
    ("--max-body-bytes", int, "largest request body before 413 (default 16 MiB)"),
    ("--body-timeout-s", float, "time allowed to receive a request body before 408 (default 30)"),
    ("--max-pixels", int, "largest width*height of an image (default 89478485)"),
    ("--max-aspect-ratio", float, "longest / shortest side of an image (default 50)"),
    ("--url-timeout-s", float, "deadline of one URL download (default 10)"),
    ("--url-max-bytes", int, "largest URL download (default 10 MiB)"),
    ("--url-max-redirects", int, "redirects followed per URL (default 3)"),
    ("--retry-after-s", int, "Retry-After of 503 answers (default 1)"),
    ("--graceful-timeout-s", int, "how long shutdown waits for in-flight requests (default 30)"),
    ("--log-level", str, "uvicorn log level (default info)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="config_file", metavar="FILE", help="YAML or JSON file of settings")
    for flag, kind, text in _OPTIONS:
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--allow-urls",
        action="store_true",
        default=None,
        help="accept http(s) URLs as images (public addresses)",
    )
    parser.add_argument(
        "--url-allow-network",
        dest="url_allowed_networks",
        action="append",
        metavar="CIDR",
        help="let URLs reach this non-public network too (repeatable), e.g. 10.1.0.0/16",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        default=None,
        help="semantic segmentation: multi-scale + flip testing (mmseg's ratios 0.5-1.75)",
    )
    parser.add_argument(
        "--torch-prepack",
        action="store_true",
        default=None,
        help="torch fp32 on the CPU: linear layers on weights oneDNN prepacked once (faster at small batches)",
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", default=None, help="skip the warm-up batch"
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings: given flags, then ``SWINKIT_*`` variables, then the config file; ValueError if invalid."""
    from pydantic import ValidationError

    from swinkit.serve.settings import ServeSettings

    names = ["config_file", "allow_urls", "url_allowed_networks", "warmup", "tta", "torch_prepack"]
    names += [flag[2:].replace("-", "_") for flag, _, _ in _OPTIONS]
    flags = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    try:
        return ServeSettings(**flags)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(
            f"invalid serve settings ({problems}); --model is required unless SWINKIT_MODEL is set"
        ) from None


def run(args: argparse.Namespace) -> int:
    from swinkit.serve.server import load_model, run_server

    settings = settings_from_args(args)
    service = load_model(settings)  # before uvicorn starts: a bad model is one error line, exit 2
    url = f"http://{settings.host}:{settings.port}"
    print(f"swinkit serve: {settings.model} on {url} (GET /ready answers 200 once it is warmed up)")
    run_server(settings, service)
    return 0

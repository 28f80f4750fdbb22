"""Load test of a running ``swinkit serve``: N concurrent clients post images for T seconds.

    python benchmarks/load.py --url http://127.0.0.1:8000 --clients 16 --duration 20 [--images a.jpg b.png]
    python benchmarks/load.py --clients 16 --warmup 30 --duration 20    # after 30 s of uncounted load

Each client sends one request after another (``--images-per-request`` base64 images each, cycling over
``--images`` or a synthetic photo-sized JPEG). Prints throughput (img/s), latency percentiles of the
successful requests and error counts by HTTP status or exception.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


@dataclass
class LoadReport:
    """What a load run measured."""

    duration_s: float
    images_per_request: int
    sent: int = 0  # requests started; each ends as a success or one error
    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    errors: Counter = field(default_factory=Counter)  # "HTTP 503", "ReadTimeout", ...

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def images_per_s(self) -> float:
        return self.ok * self.images_per_request / self.duration_s

    def percentile_ms(self, q: float) -> float:
        """Latency at quantile ``q`` (nearest rank), in milliseconds; nan without successes."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, max(0, int(np.ceil(q * len(ordered))) - 1))]

    def summary(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"requests sent: {self.sent}  ok: {self.ok}  images/s: {self.images_per_s:.1f}\n"
            f"latency ms p50: {self.percentile_ms(0.5):.1f}  p95: {self.percentile_ms(0.95):.1f}  "
            f"p99: {self.percentile_ms(0.99):.1f}\n"
            f"errors: {errors}"
        )


def synthetic_jpeg(size: tuple[int, int] = (480, 640), seed: int = 0) -> bytes:
    """A smooth random RGB JPEG of ``size`` (height, width), photo-like in byte size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 16, size[1] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_payloads(images: Sequence[bytes], per_request: int) -> list[bytes]:
    """Request bodies cycling over ``images``, ``per_request`` images each (one body per image at least)."""
    encoded = [base64.b64encode(image).decode("ascii") for image in images]
    cycle = itertools.cycle(encoded)
    bodies = []
    for _ in range(len(encoded)):
        rows = [[next(cycle)] for _ in range(per_request)]
        bodies.append(
            httpx.Request("POST", "/", json={"input_data": {"columns": ["image"], "data": rows}}).read()
        )
    return bodies


async def _client(
    client: httpx.AsyncClient, url: str, bodies: list[bytes], deadline: float, report: LoadReport
) -> None:
    for body in itertools.cycle(bodies):
        if time.perf_counter() >= deadline:
            return
        start = time.perf_counter()
        report.sent += 1
        try:
            response = await client.post(url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            report.errors[type(e).__name__] += 1
            continue
        if response.status_code == 200:
            report.latencies_s.append(time.perf_counter() - start)
        else:
            report.errors[f"HTTP {response.status_code}"] += 1


async def run_load(
    url: str,
    bodies: list[bytes],
    *,
    clients: int,
    duration_s: float,
    images_per_request: int,
    timeout_s: float = 60,
) -> LoadReport:
    """Run ``clients`` concurrent clients posting ``bodies`` to ``url`` (the /score URL) for ``duration_s``."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        report = LoadReport(duration_s, images_per_request)
        deadline = start + duration_s
        await asyncio.gather(*(_client(client, url, bodies, deadline, report) for _ in range(clients)))
        report.duration_s = time.perf_counter() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run")
    parser.add_argument("--images", nargs="*", type=Path, default=[], help="image files to send")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of the same load run first and not counted"
    )
    args = parser.parse_args(argv)
    images = [path.read_bytes() for path in args.images] or [synthetic_jpeg()]
    bodies = make_payloads(images, args.images_per_request)
    url = args.url.rstrip("/") + "/score"
    if args.warmup > 0:  # e.g. an OpenVINO server compiles a graph per new batch shape on first use
        print(f"warm-up: {args.clients} clients for {args.warmup:g} s")
        asyncio.run(
            run_load(
                url,
                bodies,
                clients=args.clients,
                duration_s=args.warmup,
                images_per_request=args.images_per_request,
                timeout_s=args.timeout,
            )
        )
    print(f"{args.clients} clients for {args.duration:g} s against {url}")
    report = asyncio.run(
        run_load(
            url,
            bodies,
            clients=args.clients,
            duration_s=args.duration,
            images_per_request=args.images_per_request,
            timeout_s=args.timeout,
        )
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

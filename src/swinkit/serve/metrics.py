"""Prometheus metrics of the endpoint, in the text exposition format (version 0.0.4).

``ServeMetrics`` holds the counters and histograms; ``MetricsMiddleware`` counts every HTTP answer by
route and status and times it; ``render`` writes them all for ``GET /metrics``. ``AccessLogMiddleware``
logs one INFO line per answer on the ``swinkit.serve.access`` logger.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Labels = tuple[tuple[str, str], ...]
ACCESS_LOGGER = "swinkit.serve.access"
IMAGE_COUNT = "swinkit.images"  # ASGI scope key: how many images a /score request holds

access_log = logging.getLogger(ACCESS_LOGGER)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = labels + ((extra,) if extra else ())
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value)) if value != int(value) else str(int(value))


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help, self.kind = name, help_text, "counter"
        self._values: dict[Labels, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] += amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self._values.items())]


class Histogram:
    """Observations counted into cumulative ``le`` buckets, with their sum and count, per label set."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help, self.kind = name, help_text, "histogram"
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def samples(self) -> list[str]:
        out = []
        with self._lock:
            for key, series in sorted(self._series.items()):
                for bound, count in zip(self.buckets, series):
                    out.append(f"{self.name}_bucket{_labels(key, ('le', _number(bound)))} {_number(count)}")
                out.append(f"{self.name}_sum{_labels(key)} {series[-2]!r}")
                out.append(f"{self.name}_count{_labels(key)} {_number(series[-1])}")
        return out


class Gauge:
    """A value read when the metrics are rendered."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.kind = name, help_text, "gauge"
        self.read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_number(self.read())}"]


class InfoMetric:
    """A gauge of value 1 whose labels describe the server (Prometheus' ``*_info`` convention), read when
    the metrics are rendered; no sample while ``read`` returns None."""

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[str, str] | None]) -> None:
        self.name, self.help, self.kind = name, help_text, "gauge"
        self.read = read

    def samples(self) -> list[str]:
        labels = self.read()
        return [] if labels is None else [f"{self.name}{_labels(tuple(sorted(labels.items())))} 1"]


class ServeMetrics:
    """Every metric the endpoint exports."""

    def __init__(self, max_batch_size: int) -> None:
        batch_buckets = sorted(
            {2**i for i in range(max(1, max_batch_size).bit_length() + 1)} | {max_batch_size}
        )
        self.requests = Counter("swinkit_requests_total", "HTTP requests answered, by route and status.")
        self.latency = Histogram(
            "swinkit_request_duration_seconds", "Time to answer an HTTP request, by route.", LATENCY_BUCKETS
        )
        self.images = Counter("swinkit_images_total", "Images scored.")
        self.batch_size = Histogram(
            "swinkit_batch_size", "Images per batch run through the model.", batch_buckets
        )
        self.gauges: list[Gauge | InfoMetric] = []

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges.append(Gauge(name, help_text, read))

    def add_info(self, name: str, help_text: str, read: Callable[[], dict[str, str] | None]) -> None:
        self.gauges.append(InfoMetric(name, help_text, read))

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.latency, self.images, self.batch_size, *self.gauges):
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
            lines += metric.samples()
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP answer by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(route=path, status=str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - start, route=path)


def _logged_path(scope: Scope) -> str:
    """The path as the client sent it (still percent-encoded, so ``%0A`` cannot forge a log line)."""
    raw = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    return scope["path"].encode("unicode_escape").decode("ascii")


class AccessLogMiddleware:
    """ASGI middleware logging every HTTP answer: ``POST /score 200 12.3 ms 2 images`` (0 when none were read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            latency_ms = (time.perf_counter() - start) * 1000
            images = scope.get(IMAGE_COUNT, 0)
            access_log.info(
                "%s %s %d %.1f ms %d images",
                scope["method"],
                _logged_path(scope),
                status["code"],
                latency_ms,
                images,
                extra={"status": status["code"], "latency_ms": latency_ms, "images": images},
            )

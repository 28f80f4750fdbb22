"""``swinkit serve`` as a real uvicorn process on a loopback port: results, hostile inputs, load, shutdown."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import b64, image_server, make_images, make_model_dir, png_bomb

from swinkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python -m swinkit serve`` in a subprocess on a free loopback port."""

    def __init__(self, model_dir: Path, log: Path, *flags: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable,
            "-m",
            "swinkit",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(self.port),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, "--log-level", "warning", *flags], stdout=out, stderr=out, env=env
            )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text())

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> bool:
        """SIGTERM and wait; whether it shut down cleanly (uvicorn re-raises SIGTERM once it is done)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return False
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.log.read_text()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_live")
    return root, make_model_dir(root), make_images(root)


@pytest.fixture(scope="module")
def servers(files):
    """Started together: the default server (no URLs), one fetching URLs from 127.0.0.1 only, and one that
    holds batches for 1.5 s (for the shutdown test)."""
    root, model_dir, _ = files
    plain = LiveServer(
        model_dir, root / "plain.log", "--max-body-bytes", str(MAX_BODY), "--max-images-per-request", "8",
        "--body-timeout-s", "1",
    )  # fmt: skip
    urls = LiveServer(
        model_dir, root / "urls.log", "--allow-urls", "--url-allow-network", "127.0.0.1/32",
        "--url-timeout-s", "1", "--url-max-bytes", "100000",
    )  # fmt: skip
    slow = LiveServer(
        model_dir, root / "slow.log", "--max-delay-ms", "1500", "--max-batch-size", "64", "--no-warmup"
    )
    try:
        for server in (plain, urls, slow):
            server.wait_ready()
        yield plain, urls, slow
    finally:
        assert all([plain.stop(), urls.stop(), slow.stop()])


def score(url: str, images: list[str], **kwargs) -> httpx.Response:
    return httpx.post(
        f"{url}/score", json={"input_data": {"columns": ["image"], "data": [[i] for i in images]}}, **kwargs
    )


def test_base64_and_data_uri_give_the_probabilities_of_swinkit_predict(servers, files):
    root, model_dir, images = files
    output = root / "predict.jsonl"
    assert main(["predict", "--model", str(model_dir), *map(str, images), "--output", str(output)]) == 0
    expected = [json.loads(line)["probs"] for line in output.read_text().splitlines()]
    encoded = [b64(path.read_bytes()) for path in images]
    mimes = ["image/png" if path.suffix == ".png" else "image/jpeg" for path in images]
    plain = score(servers[0].url, encoded)
    uris = score(servers[0].url, [f"data:{m};base64,{e}" for m, e in zip(mimes, encoded)])
    assert plain.status_code == uris.status_code == 200
    np.testing.assert_allclose([r["probs"] for r in plain.json()], expected, atol=1e-5)
    np.testing.assert_allclose([r["probs"] for r in uris.json()], expected, atol=1e-5)


class _Chunked:
    """A body of ``size`` spaces sent in 64 KiB chunks without Content-Length; re-iterable."""

    def __init__(self, size: int) -> None:
        self.chunks = size // 65536 + 1

    def __iter__(self):
        return (b" " * 65536 for _ in range(self.chunks))

    async def async_chunks(self):
        for chunk in self:
            yield chunk


def _hostile_requests(image: bytes) -> list[tuple[str, dict, int, str, int | None]]:
    good = b64(image)
    json_headers = {"content-type": "application/json"}
    return [
        ("malformed json", {"content": b'{"input_data": [', "headers": json_headers}, 400, "invalid_json", None),
        ("wrong schema", {"json": {"data": [good]}}, 422, "invalid_schema", None),
        ("wrong item type", {"json": {"input_data": [good, {"b64": good}]}}, 422, "invalid_schema", 1),
        ("invalid base64", {"json": {"input_data": [good, "not*base64"]}}, 400, "invalid_base64", 1),
        ("non-image bytes", {"json": {"input_data": [b64(b"GIF89a but not really")]}}, 400, "invalid_image", 0),
        ("truncated image", {"json": {"input_data": [good, b64(image[: len(image) // 2])]}}, 400, "invalid_image", 1),
        ("decompression bomb", {"json": {"input_data": [b64(png_bomb())]}}, 413, "image_too_large", 0),
        ("too many images", {"json": {"input_data": [good] * 9}}, 413, "too_many_images", None),
        ("declared body too large", {"json": {"input_data": ["A" * MAX_BODY]}}, 413, "body_too_large", None),
        ("streamed body too large", {"content": _Chunked(3 * MAX_BODY // 2), "headers": json_headers}, 413,
         "body_too_large", None),
        ("url without --allow-urls", {"json": {"input_data": ["http://127.0.0.1:9/a.png"]}}, 400, "urls_disabled", 0),
        ("unsupported scheme", {"json": {"input_data": ["gopher://127.0.0.1/"]}}, 400, "unsupported_scheme", 0),
        ("not json", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type",
         None),
    ]  # fmt: skip


def _expect_error(response: httpx.Response, status: int, code: str, index: int | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["index"]) == (code, index) and error["message"]


def test_hostile_inputs_get_a_4xx_and_the_server_keeps_serving(servers, files):
    url = servers[0].url
    image = files[2][0].read_bytes()
    for name, request, status, code, index in _hostile_requests(image):
        try:
            response = httpx.post(f"{url}/score", timeout=30, **request)
        except (httpx.WriteError, httpx.ReadError):  # a 413 answered and closed before the body was written
            assert status == 413, name
        else:
            _expect_error(response, status, code, index)
        assert score(url, [b64(image)]).status_code == 200, f"not serving after: {name}"


def _raw_exchange(url: str, request: bytes, wait_s: float) -> bytes:
    """Send raw bytes, then read whatever comes back until the server closes (or ``wait_s`` passes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_oversized_or_stalled_body_is_answered_and_the_connection_closed(servers, files):
    url = servers[0].url
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    oversized = _raw_exchange(url, head % (2 * MAX_BODY) + smuggled, wait_s=10)
    assert oversized.startswith(b"HTTP/1.1 413") and b"connection: close" in oversized.lower()
    assert b"not_found" not in oversized  # the unread body was never taken for a request
    start = time.monotonic()
    stalled = _raw_exchange(url, head % 1000 + b'{"input_data": [', wait_s=10)  # never finishes the body
    assert stalled.startswith(b"HTTP/1.1 408") and b"body_timeout" in stalled
    assert time.monotonic() - start < 8
    assert score(url, [b64(files[2][0].read_bytes())]).status_code == 200


def test_url_inputs_and_their_hostile_forms(servers, files):
    url = servers[1].url
    image = files[2][0].read_bytes()
    with image_server(image) as origin:
        by_url = score(url, [f"{origin}/image.png", b64(image)])
        assert by_url.status_code == 200
        np.testing.assert_allclose(by_url.json()[0]["probs"], by_url.json()[1]["probs"], atol=1e-6)
        refused_origin = origin.replace(
            "127.0.0.1", "127.0.0.2"
        )  # loopback, but not the allowed 127.0.0.1/32
        cases = [
            (f"{refused_origin}/image.png", 400, "url_forbidden"),
            (f"{origin}/redirect?{refused_origin}/image.png", 400, "url_forbidden"),
            (f"{origin}/slow", 400, "url_timeout"),
            (f"{origin}/huge", 413, "url_too_large"),
            (f"{origin}/huge-declared", 413, "url_too_large"),
            (f"{origin}/loop", 400, "url_too_many_redirects"),
            ("ftp://127.0.0.1/image.png", 400, "unsupported_scheme"),
        ]
        for item, status, code in cases:
            _expect_error(score(url, [b64(image), item], timeout=30), status, code, 1)
            assert score(url, [b64(image)]).status_code == 200


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("load_benchmark", ROOT / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _batch_mean(url: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    values = {
        line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("swinkit_batch_size_")
    }
    return values["swinkit_batch_size_sum"] / values["swinkit_batch_size_count"]


async def _hostile_client(url: str, image: bytes, duration_s: float) -> list[int]:
    """Cycle through hostile requests (no downloads) for ``duration_s``; the statuses they got."""
    requests = [r for r in _hostile_requests(image) if "urls" not in r[0]]
    statuses = []
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        deadline = time.monotonic() + duration_s
        for _, request, status, *_ in itertools.cycle(requests):
            if time.monotonic() >= deadline:
                return statuses
            if isinstance(request.get("content"), _Chunked):
                request = {**request, "content": request["content"].async_chunks()}
            try:
                statuses.append((await client.post(f"{url}/score", **request)).status_code)
            except (httpx.WriteError, httpx.ReadError):
                # a 413 answered, and the connection closed, before the whole body was written: the client
                # sees a failed write or (when the close wins the race with its read) a reset read
                if status != 413:
                    raise
                statuses.append(413)
    return statuses


def test_32_clients_for_20_seconds_with_hostile_traffic(servers, files):
    server = servers[0]
    load = _load_benchmark()
    bodies = load.make_payloads([path.read_bytes() for path in files[2]], 1)
    url = f"{server.url}/score"
    asyncio.run(
        load.run_load(url, bodies, clients=8, duration_s=1, images_per_request=1)
    )  # settle the allocator
    before = server.rss_mb()

    async def soak():
        hostile = [_hostile_client(server.url, files[2][0].read_bytes(), 20) for _ in range(2)]
        return await asyncio.gather(
            load.run_load(url, bodies, clients=32, duration_s=20, images_per_request=1), *hostile
        )

    report, *hostile = asyncio.run(soak())
    growth = server.rss_mb() - before
    refused = [status for statuses in hostile for status in statuses]
    print(f"\nsoak: {report.summary()}\nhostile requests: {len(refused)}\nRSS growth {growth:.1f} MB")
    assert report.errors == {} and report.ok == report.sent > 100  # no 5xx, no error, nothing lost
    assert refused and all(400 <= status < 500 for status in refused)
    assert growth < 200
    assert _batch_mean(server.url) > 1.5  # concurrent requests really were batched


def test_load_benchmark_runs(servers):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--url", servers[0].url, "--clients", "2", "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout and "p99" in result.stdout and "errors: none" in result.stdout


def test_sigterm_lets_in_flight_requests_finish(servers, files):
    server = servers[2]
    body = json.dumps({"input_data": [b64(files[2][0].read_bytes())]})
    statuses: list[int] = []

    def client() -> None:
        statuses.append(httpx.post(f"{server.url}/score", content=body, timeout=30).status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while (
        "swinkit_queue_depth 6" not in httpx.get(f"{server.url}/metrics").text
    ):  # all six wait for their batch
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 6
    assert server.stop()

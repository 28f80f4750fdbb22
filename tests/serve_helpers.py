"""Shared by the serve tests: a tiny model, test images, a loopback HTTP server and a connection guard."""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

import swinkit
from swinkit.presets import Preprocessing

LABELS = ["cat", "dog", "bird"]


def make_model_dir(root: Path) -> Path:
    """A random-init swin_micro classifier with 3 labels, saved in the HF layout."""
    model = swinkit.create_model("swin_micro", num_classes=3, labels=LABELS)
    return swinkit.save_pretrained(
        model, root / "model", preprocessing=Preprocessing(image_size=(64, 64), crop_pct=None)
    )


def make_images(root: Path) -> list[Path]:
    """Two PNGs and a JPEG of different sizes."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, ext) in enumerate((((48, 80), "png"), ((90, 60), "jpg"), ((64, 64), "png"))):
        path = root / f"image{i}.{ext}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The base URL of ``app`` served by a real uvicorn on a free 127.0.0.1 port, once ``/ready`` says 200."""
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started or httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not become ready"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def ready_client(app: FastAPI) -> Iterator[TestClient]:
    """A TestClient once the app's model is loaded and warmed up."""
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.02)
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height RGB pixels, cut off after the first row (under 100 bytes): its
    header is valid, decoding it fails."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    first_row = zlib.compressobj().compress(b"\0" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", first_row)


def png_bomb(side: int = 10_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels (100 M by default) in a few kilobytes."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    image = b""
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, _, query = self.path.partition("?")
        try:
            if path == "/image.png":
                self._send(
                    200, self.image, {"Content-Type": "image/png", "Content-Length": str(len(self.image))}
                )
            elif path == "/host":
                self._send(200, self.headers["Host"].encode())
            elif path == "/slow":
                self._send(200, b"", {"Content-Length": "100000"})
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif path == "/huge-declared":
                self._send(200, b"", {"Content-Length": str(10**9)})
            elif path == "/huge":
                self._send(200, b"", {"Content-Type": "image/png"})  # no length: until the connection closes
                for _ in range(1000):
                    self.wfile.write(b"\0" * 65536)
            elif path == "/redirect":
                self._send(302, b"", {"Location": query, "Content-Length": "0"})
            elif path == "/loop":
                self._send(302, b"", {"Location": "/loop", "Content-Length": "0"})
            else:
                self._send(404, b"no such thing")
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def image_server(image: bytes) -> Iterator[str]:
    """A loopback HTTP server: /image.png, /host, /slow, /huge, /huge-declared, /redirect?<url>, /loop."""
    handler = type("Handler", (_Handler,), {"image": image})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Record every address httpx connects to; refuse (without any packet) all but 127.0.0.1."""
    connected: list[str] = []
    original = httpcore.AnyIOBackend.connect_tcp

    async def guarded(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        connected.append(host)
        if host != "127.0.0.1":
            raise AssertionError(f"test tried to connect to {host}")
        return await original(self, host, port, *args, **kwargs)

    httpcore.AnyIOBackend.connect_tcp = guarded  # type: ignore[method-assign]
    try:
        yield connected
    finally:
        httpcore.AnyIOBackend.connect_tcp = original  # type: ignore[method-assign]

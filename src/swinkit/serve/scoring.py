"""The ``POST /score`` pipeline: admit, read the body (bounded), parse, load and decode the images in
worker threads, run them through the batcher, answer one result per image in input order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import anyio
import anyio.to_thread
import torch
from PIL import Image
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from swinkit.data.decode import ImageDecodeError, decode_image
from swinkit.serve.batching import Batcher, BatcherClosedError, QueueFullError
from swinkit.serve.errors import ServeError
from swinkit.serve.fetch import Fetcher
from swinkit.serve.inputs import check_items, fetch_urls, item_bytes
from swinkit.serve.schemas import ScoreRequest
from swinkit.serve.service import ScoringService
from swinkit.serve.settings import ServeSettings

log = logging.getLogger(__name__)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body; 413 as soon as it is known to exceed ``limit`` bytes (declared or streamed), 408 if
    it has not arrived after ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ServeError(400, "invalid_content_length", f"Content-Length {declared!r} is not a byte count")
    too_large = ServeError(
        413, "body_too_large", f"the request body exceeds the limit of {limit} bytes", close=True
    )
    if declared is not None and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    received = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large
                chunks.append(chunk)
    except ClientDisconnect:
        raise ServeError(
            400, "client_disconnected", "the client went away before sending the whole body"
        ) from None
    except TimeoutError:
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise ServeError(408, "body_timeout", message, close=True) from None
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    """415 unless the body is declared as JSON (a missing Content-Type is taken as JSON)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ServeError(415, "unsupported_media_type", f"the body must be application/json, not {media}")


def parse_request(body: bytes) -> list[str]:
    """The image strings of a ``/score`` body; 400 for malformed JSON, 422 for the wrong schema."""
    try:
        return ScoreRequest.model_validate_json(body).images()
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise ServeError(400, "invalid_json", f"the body is not valid JSON: {first['msg']}") from None
        loc = first["loc"]
        index = (
            loc[2] if len(loc) > 2 and loc[:2] == ("input_data", "data") and isinstance(loc[2], int) else None
        )
        where = ".".join(str(part) for part in loc) or "body"
        raise ServeError(422, "invalid_schema", f"{where}: {first['msg']}", index=index) from None


class Scorer:
    """Scores ``/score`` requests with a service and its batcher; at most ``max_concurrent_requests`` at once."""

    def __init__(
        self, settings: ServeSettings, service: ScoringService, batcher: Batcher, fetcher: Fetcher | None
    ) -> None:
        self.settings = settings
        self.service = service
        self.batcher = batcher
        self.fetcher = fetcher
        self.active = 0
        self._limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))  # threads decoding images

    async def score(self, request: Request) -> list[dict]:
        """One result object per image of the request, in input order."""
        if self.active >= self.settings.max_concurrent_requests:
            raise self._overloaded(f"{self.active} requests are already being handled")
        self.active += 1
        try:
            return await self._score(request)
        finally:
            self.active -= 1

    async def _score(self, request: Request) -> list[dict]:
        check_content_type(request)
        body = await read_body(request, self.settings.max_body_bytes, self.settings.body_timeout_s)
        images = parse_request(body)
        del body
        limit = self.settings.max_images_per_request
        if len(images) > limit:
            raise ServeError(
                413, "too_many_images", f"{len(images)} images in one request; the limit is {limit}"
            )
        check_items(images, allow_urls=self.settings.allow_urls)
        fetched = await fetch_urls(images, self.fetcher)
        pixels = await anyio.to_thread.run_sync(self._prepare, images, fetched, limiter=self._limiter)
        del images, fetched
        try:
            results = await self.batcher.submit(pixels)
        except QueueFullError as e:
            raise self._overloaded(str(e)) from None
        except BatcherClosedError as e:
            raise ServeError(503, "shutting_down", str(e), retry_after=self.settings.retry_after_s) from None
        return [result.model_dump() for result in results]

    def _prepare(self, images: Sequence[str], fetched: dict[int, bytes]) -> list[torch.Tensor]:
        """Decode and preprocess every image (runs in a worker thread)."""
        pixels = []
        for i, item in enumerate(images):
            data = item_bytes(item, i, fetched)
            image = self._decode(data, i)
            pixels.append(self.service.prepare(image))
        return pixels

    def _decode(self, data: bytes, index: int) -> Image.Image:
        """The RGB image of item ``index``; 400 for anything that is not a sane image."""
        try:
            image = decode_image(data, name=f"item {index}", max_pixels=self.settings.max_pixels)
        except ImageDecodeError as e:
            raise ServeError(400, "invalid_image", str(e), index=index) from None
        except Exception as e:  # hostile bytes must not become a 500, whatever the decoder trips on
            log.warning("item %d: decoder failed with %s: %s", index, type(e).__name__, e)
            raise ServeError(
                400, "invalid_image", f"item {index}: not a readable image", index=index
            ) from None
        width, height = image.size
        if max(width, height) > self.settings.max_aspect_ratio * min(width, height):
            raise ServeError(
                400,
                "invalid_image",
                f"item {index}: {width}x{height} is too elongated to classify",
                index=index,
            )
        return image

    def _overloaded(self, reason: str) -> ServeError:
        return ServeError(
            503, "overloaded", f"the server is busy ({reason})", retry_after=self.settings.retry_after_s
        )

"""The ``POST /score`` pipeline: admit, read the body (bounded), parse, load and decode the images in
worker threads, run them through the batcher, answer one result per image in input order.

The body is the Azure ML JSON (``swinkit.serve.schemas``) or, with an image Content-Type
(``RAW_IMAGE_TYPES``), one encoded image, scored exactly as the same bytes in base64 would be.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.to_thread
import torch
from PIL import Image
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from swinkit.data.decode import ImageDecodeError, ImageTooLargeError, decode_image
from swinkit.serve.batching import Batcher, BatcherClosedError, QueueFullError
from swinkit.serve.errors import ServeError
from swinkit.serve.fetch import Fetcher
from swinkit.serve.inputs import check_items, fetch_urls, item_bytes
from swinkit.serve.metrics import IMAGE_COUNT
from swinkit.serve.schemas import ScoreRequest
from swinkit.serve.service import ScoringService
from swinkit.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ServeError(400, "invalid_content_length", f"Content-Length {declared!r} is not a byte count")
    return None if declared is None else int(declared)


async def _discard(stream: AsyncIterator[bytes], max_bytes: int, timeout_s: float) -> bool:
    """Read and drop the rest of a body (at most ``max_bytes``, ``timeout_s``); whether it all arrived.

    Answering before the client has finished sending, then closing, can reset the connection under the
    answer; swallowing a moderate excess first lets the client read its 413.
    """
    dropped = 0
    with anyio.move_on_after(timeout_s):
        async for chunk in stream:
            dropped += len(chunk)
            if dropped > max_bytes:
                return False
        return True
    return False


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body; 413 once it is known to exceed ``limit`` bytes (declared or streamed; an excess up
    to ``limit`` more is read and dropped first), 408 if it has not arrived after ``timeout_s``."""
    declared = _declared_length(request)
    stream = request.stream()
    chunks: list[bytes] = []
    received = 0
    try:
        with anyio.fail_after(timeout_s):
            if declared is None or declared <= limit:
                async for chunk in stream:
                    received += len(chunk)
                    if received > limit:
                        break
                    chunks.append(chunk)
                else:
                    return b"".join(chunks)
            chunks.clear()
            excess = None if declared is None else declared - received
            complete = excess is not None and excess == 0
            if not complete and (excess is None or excess <= limit):
                complete = await _discard(stream, limit, timeout_s=2.0)
    except ClientDisconnect:
        raise ServeError(
            400, "client_disconnected", "the client went away before sending the whole body"
        ) from None
    except TimeoutError:
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise ServeError(408, "body_timeout", message, close=True) from None
    message = f"the request body exceeds the limit of {limit} bytes"
    raise ServeError(413, "body_too_large", message, close=not complete)


RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")


def is_raw_image(request: Request) -> bool:
    """Whether the body is one encoded image (a ``RAW_IMAGE_TYPES`` Content-Type, as TorchServe clients
    send) rather than JSON (``application/json``, ``*+json`` or no Content-Type); 415 for anything else."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if media in RAW_IMAGE_TYPES:
        return True
    if media != "application/json" and not media.endswith("+json"):
        raise ServeError(
            415,
            "unsupported_media_type",
            f"the body must be application/json or one image ({', '.join(RAW_IMAGE_TYPES)}), not {media}",
        )
    return False


def parse_request(body: bytes, max_images: int) -> list[str]:
    """The image strings of a ``/score`` body: 400 for malformed JSON, 422 for the wrong schema, 413 for more
    than ``max_images`` images or far more JSON values than they need (parsing costs ~20x their bytes)."""
    values = sum(body.count(token) for token in (b",", b":", b"[", b"{"))  # bounds the number of JSON values
    if values > 64 * max_images + 1024:
        raise ServeError(
            413,
            "too_many_values",
            f"the body holds up to {values} JSON values; {max_images} images need far fewer",
        )
    try:
        images = ScoreRequest.model_validate_json(body).images()
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
    if len(images) > max_images:
        raise ServeError(
            413, "too_many_images", f"{len(images)} images in one request; the limit is {max_images}"
        )
    return images


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
        raw = is_raw_image(request)
        body = await read_body(request, self.settings.max_body_bytes, self.settings.body_timeout_s)
        if raw:
            request.scope[IMAGE_COUNT] = 1
            pixels = await anyio.to_thread.run_sync(self._prepare_raw, body, limiter=self._limiter)
            del body
        else:
            limit = self.settings.max_images_per_request
            images = await anyio.to_thread.run_sync(parse_request, body, limit, limiter=self._limiter)
            del body
            request.scope[IMAGE_COUNT] = len(images)
            pixels = await self._prepare_items(images)
        try:
            results = await self.batcher.submit(pixels)
        except QueueFullError as e:
            raise self._overloaded(str(e)) from None
        except BatcherClosedError as e:
            raise ServeError(503, "shutting_down", str(e), retry_after=self.settings.retry_after_s) from None
        return [result.model_dump() for result in results]

    async def _prepare_items(self, images: Sequence[str]) -> list[torch.Tensor]:
        """Model inputs of a JSON body's images (base64, data URIs, downloaded URLs)."""
        check_items(images, allow_urls=self.settings.allow_urls)
        fetched = await fetch_urls(images, self.fetcher)
        return await anyio.to_thread.run_sync(self._prepare, images, fetched, limiter=self._limiter)

    def _prepare_raw(self, body: bytes) -> list[torch.Tensor]:
        """The model input of a body that is one encoded image (runs in a worker thread)."""
        return [self.service.prepare(self._decode(body, 0))]

    def _prepare(self, images: Sequence[str], fetched: dict[int, bytes]) -> list[torch.Tensor]:
        """Decode and preprocess every image (runs in a worker thread)."""
        pixels = []
        for i, item in enumerate(images):
            data = item_bytes(item, i, fetched)
            image = self._decode(data, i)
            pixels.append(self.service.prepare(image))
        return pixels

    def _decode(self, data: bytes, index: int) -> Image.Image:
        """The RGB image of item ``index``, its size and elongation checked from the header; 400/413 for
        anything that is not a sane image."""
        try:
            return decode_image(
                data,
                name=f"item {index}",
                max_pixels=self.settings.max_pixels,
                max_aspect_ratio=self.settings.max_aspect_ratio,
            )
        except ImageTooLargeError as e:
            raise ServeError(413, "image_too_large", self._too_large(e, index), index=index) from None
        except ImageDecodeError as e:
            raise ServeError(400, "invalid_image", str(e), index=index) from None
        except Exception as e:  # hostile bytes must not become a 500, whatever the decoder trips on
            log.warning("item %d: decoder failed with %s: %s", index, type(e).__name__, e)
            raise ServeError(
                400, "invalid_image", f"item {index}: not a readable image", index=index
            ) from None

    def _too_large(self, error: ImageTooLargeError, index: int) -> str:
        """The refusal of an image over the pixel limit, naming the setting that sets it."""
        size = f"{error.size[0]}x{error.size[1]} = " if error.size else ""
        if error.limit < self.settings.max_pixels:  # Pillow's own bound is the lower one
            return str(error)
        return (
            f"item {index}: image is {size}{error.pixels:,} pixels; this server accepts at most "
            f"{self.settings.max_pixels:,} (SWINKIT_MAX_PIXELS)"
        )

    def _overloaded(self, reason: str) -> ServeError:
        return ServeError(
            503, "overloaded", f"the server is busy ({reason})", retry_after=self.settings.retry_after_s
        )

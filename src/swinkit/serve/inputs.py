"""Turning the request's image strings into encoded image bytes.

An item is plain base64 (standard or URL-safe alphabet, padding optional, whitespace ignored), a base64
``data:`` URI, or an http(s) URL (fetched only when URLs are allowed). Every refusal is a ``ServeError``
naming the item's index.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from swinkit.data.decode import decode_base64_text
from swinkit.serve.errors import ServeError
from swinkit.serve.fetch import Fetcher, FetchError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")  # base64 never contains ':'
URL_SCHEMES = ("http", "https")


def item_scheme(item: str) -> str | None:
    """The lower-cased URI scheme of an item (``data``, ``https``, ...), or None for plain base64."""
    match = _SCHEME.match(item)
    return match.group(1).lower() if match else None


def decode_base64(text: str, index: int) -> bytes:
    """The bytes a base64 string encodes; ServeError(400, invalid_base64) when it is not base64."""
    try:
        return decode_base64_text(text)
    except ValueError as e:
        raise ServeError(400, "invalid_base64", f"item {index} is {e}", index=index) from None


def decode_data_uri(text: str, index: int) -> bytes:
    """The bytes of a ``data:[<media type>];base64,<data>`` URI."""
    header, comma, payload = text.partition(",")
    if not comma or header.split(";")[-1].strip().lower() != "base64":
        raise ServeError(400, "invalid_data_uri", f"item {index} is not a base64 data URI", index=index)
    return decode_base64(payload, index)


def check_items(items: Sequence[str], *, allow_urls: bool) -> None:
    """Refuse unsupported schemes, and URLs when they are not allowed, before any work is done."""
    for i, item in enumerate(items):
        scheme = item_scheme(item)
        if scheme is None or scheme == "data":
            continue
        if scheme not in URL_SCHEMES:
            raise ServeError(
                400, "unsupported_scheme", f"item {i}: {scheme}: inputs are not supported", index=i
            )
        if not allow_urls:
            raise ServeError(
                400, "urls_disabled", f"item {i} is a URL; this server does not fetch URLs", index=i
            )


async def fetch_urls(items: Sequence[str], fetcher: Fetcher | None) -> dict[int, bytes]:
    """Download every URL item concurrently: {index: bytes}; the lowest failing index is the error."""
    urls = {i: item for i, item in enumerate(items) if item_scheme(item) in URL_SCHEMES}
    if not urls:
        return {}
    if fetcher is None:
        raise ServeError(400, "urls_disabled", "this server does not fetch URLs", index=min(urls))
    results = await asyncio.gather(*(fetcher.fetch(url) for url in urls.values()), return_exceptions=True)
    fetched: dict[int, bytes] = {}
    for i, result in zip(urls, results):
        if isinstance(result, FetchError):
            raise ServeError(result.status, result.code, f"item {i}: {result}", index=i)
        if isinstance(result, BaseException):
            raise result
        fetched[i] = result
    return fetched


def item_bytes(item: str, index: int, fetched: dict[int, bytes]) -> bytes:
    """The encoded image of one item (a URL item's download must be in ``fetched``)."""
    if index in fetched:
        return fetched[index]
    if item_scheme(item) == "data":
        return decode_data_uri(item, index)
    return decode_base64(item, index)

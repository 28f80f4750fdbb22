"""Decoding the image files users have into upright RGB images.

``decode_image`` opens a path, raw bytes or a PIL image and returns an 8-bit RGB ``PIL.Image.Image``:

* the EXIF orientation is applied, as transformers' ``load_image`` does (``ImageOps.exif_transpose``);
* animations (GIF, WebP, APNG, multi-page TIFF) give their first frame;
* grayscale, bilevel, palette and CMYK images go through Pillow's ``convert("RGB")``, as ``load_image`` does;
* transparency (RGBA, LA, PA, palette with a transparent index) is composited onto white, as transformers'
  ``convert_to_rgb`` does (``load_image`` would keep the colour under transparent pixels instead);
* 16-bit and 32-bit integer grayscale (16-bit PNG, TIFF) is scaled to 8 bits (``load_image`` would clip it,
  turning most of the image white); float images are clipped to [0, 255].

The pixel count is checked from the header, before any pixel data is decoded. Every failure (missing,
truncated or non-image file, too many pixels) raises ``ImageDecodeError`` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's own decompression-bomb threshold
# Longest side / shortest side accepted. Resizing the shortest edge of a 1 x 20000 strip to 224 px would make a
# 224 x 4.5M image (3 GB); real photographs and panoramas are far below this.
DEFAULT_MAX_ASPECT_RATIO = 100.0
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageDecodeError(ValueError):
    """An input could not be decoded into an image; the message names the file or item."""


# Raster formats decoded. Others are refused unopened: Pillow hands EPS/PostScript to Ghostscript, which
# would run an untrusted program on a public endpoint.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "PPM", "ICO")  # JPEG covers MPO
# File names taken for images when a folder is listed (lower case): the extensions of ALLOWED_FORMATS.
IMAGE_EXTENSIONS = tuple(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .tif .tiff .bmp .ppm .pgm .pbm .pnm .ico".split()
)

# What Pillow's plugins raise on corrupt data, beyond OSError: a cut or garbled GIF frame gives IndexError or
# struct.error, a TIFF frame without dimensions TypeError (found by tests/test_decode_fuzz.py).
_CORRUPT_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
)

_WHITESPACE = re.compile(r"\s+")
_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def decode_base64_text(text: str) -> bytes:
    """The bytes of base64 text, as leniently as clients write it: line breaks and spaces (MIME, the
    ``base64`` tool), the URL-safe alphabet and missing padding are accepted. ValueError otherwise."""
    compact = _WHITESPACE.sub("", text).encode("ascii", errors="replace").translate(_URL_SAFE)
    compact += b"=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if not data:
        raise ValueError("empty")
    return data


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than allowed (a decompression-bomb guard).

    ``pixels`` is the declared width*height, ``limit`` the bound it exceeds and ``size`` the declared
    (width, height) when known (Pillow's own guard reports only the pixel count).
    """

    def __init__(self, message: str, *, pixels: int, limit: int, size: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.pixels = pixels
        self.limit = limit
        self.size = size


def _describe(source: str | os.PathLike | bytes | Image.Image, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return "<PIL image>"


_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _bomb_error(
    error: Image.DecompressionBombError, label: str, max_pixels: int | None
) -> ImageTooLargeError:
    """Pillow's refusal (over twice ``Image.MAX_IMAGE_PIXELS``) restated with the caller's limit."""
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    match = _PILLOW_BOMB_PIXELS.search(str(error))
    pixels = int(match.group(1)) if match else pillow_limit + 1
    if max_pixels is not None and max_pixels < pillow_limit:
        message = f"{label}: {pixels:,} pixels exceed the limit of {max_pixels:,}"
        return ImageTooLargeError(message, pixels=pixels, limit=max_pixels)
    message = f"{label}: {pixels:,} pixels exceed Pillow's limit of {pillow_limit:,} (2 * PIL.Image.MAX_IMAGE_PIXELS)"
    return ImageTooLargeError(message, pixels=pixels, limit=pillow_limit)


def _open(source: str | os.PathLike | bytes | Image.Image, label: str, max_pixels: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        stream: str | io.BytesIO | Path = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        stream = Path(source)
        if not stream.is_file():
            raise ImageDecodeError(f"{label}: no such file")
    else:
        raise TypeError(f"cannot decode an image from a {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as e:
        raise _bomb_error(e, label, max_pixels) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"{label}: not an image in a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except _CORRUPT_DATA_ERRORS as e:
        raise ImageDecodeError(f"{label}: not a readable image ({e})") from None


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit RGB (integers scaled from the 16-bit range)."""
    values = np.asarray(image)
    if image.mode == "F":
        eight = np.clip(np.nan_to_num(values), 0, 255).round()
    else:
        eight = np.clip(values.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(eight).astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a decoded image (see the module docstring for each mode)."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES or image.mode == "F":
        return _high_depth_to_rgb(image)
    if image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image, label: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as e:
        log.warning("%s: unreadable EXIF orientation ignored (%s)", label, e)
        return image


def _first_frame_rgb(image: Image.Image, label: str) -> Image.Image:
    """Decode the first frame, upright, as RGB (may return ``image`` itself when nothing had to change)."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
    image.load()  # a single-frame file opened by path is closed by Pillow once loaded
    rgb = to_rgb(_upright(image, label))
    if rgb is image and frames > 1:
        rgb = image.copy()  # detach the first frame from the still-open animation
    return rgb


def decode_image(
    source: str | os.PathLike | bytes | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """An upright 8-bit RGB image from a path, encoded bytes or a PIL image.

    ``name`` is how errors refer to the input (default: the path). ``max_pixels`` bounds width*height,
    checked from the header before decoding (None: no bound beyond Pillow's own); so is
    ``max_aspect_ratio``, longest over shortest side (None: any).
    Raises ``ImageDecodeError`` for a missing, truncated or non-image input, or one with too many pixels.
    """
    label = _describe(source, name)
    image = _open(source, label, max_pixels)
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        if image is not source:
            image.close()
        message = f"{label}: {width}x{height} pixels exceed the limit of {max_pixels:,}"
        raise ImageTooLargeError(message, pixels=width * height, limit=max_pixels, size=(width, height))
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * max(1, min(width, height)):
        if image is not source:
            image.close()
        raise ImageDecodeError(
            f"{label}: {width}x{height} is too elongated (more than {max_aspect_ratio:g}:1)"
        )
    try:
        rgb = _first_frame_rgb(image, label)
    except _CORRUPT_DATA_ERRORS as e:
        if image is not source:
            image.close()
        raise ImageDecodeError(f"{label}: could not decode the image ({e})") from None
    if rgb is not image and image is not source:
        image.close()
    return rgb

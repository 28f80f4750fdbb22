"""The decoder under hostile bytes: whatever arrives, ``decode_image`` returns an RGB image within its limits
or raises ``ImageDecodeError``, never anything else (the endpoint answers 400 for those, 500 otherwise)."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from swinkit.data.decode import ImageDecodeError, decode_image

MAX_PIXELS = 200_000  # keeps a mutated header from declaring a large (slow) image
EXAMPLES = int(os.environ.get("SWINKIT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files of every accepted format and a few awkward modes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return {
        "png": _encode(rgb, "PNG"),
        "png_rgba": _encode(rgb.convert("RGBA"), "PNG"),
        "png_16bit": _encode(Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)), "PNG"),
        "png_palette": _encode(rgb.convert("P"), "PNG"),
        "jpeg": _encode(rgb, "JPEG", quality=90),
        "jpeg_progressive": _encode(rgb, "JPEG", progressive=True),
        "jpeg_cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "webp": _encode(rgb, "WEBP", quality=80),
        "webp_lossless": _encode(rgb, "WEBP", lossless=True),
        "bmp": _encode(rgb, "BMP"),
        "tiff": _encode(rgb, "TIFF"),
        "tiff_deflate": _encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "ppm": _encode(rgb, "PPM"),
        "ico": _encode(rgb, "ICO"),
    }


SEEDS = _seeds()


def _check(data: bytes) -> None:
    try:
        image = decode_image(data, name="fuzz", max_pixels=MAX_PIXELS)
    except ImageDecodeError as e:
        assert str(e).startswith("fuzz: ")
        return
    assert image.mode == "RGB"
    width, height = image.size
    assert 0 < width * height <= MAX_PIXELS
    assert np.asarray(image).shape == (height, width, 3)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid seed file with some bytes overwritten, a run inserted or deleted, and maybe truncated."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        del data[at : at + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_every_seed_decodes(kind):
    assert decode_image(SEEDS[kind]).mode == "RGB"


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_image_decode_error(data):
    _check(data)


@st.composite
def valid_header(draw: st.DrawFn) -> bytes:
    """The first bytes of a valid seed file (its signature and part of its header), then garbage."""
    data = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    return data[: draw(st.integers(0, 64))] + draw(st.binary(max_size=512))


@FUZZ
@given(valid_header())
def test_valid_headers_with_garbage_after_them(data):
    _check(data)


@FUZZ
@given(mutated())
def test_mutated_valid_images_decode_or_raise_image_decode_error(data):
    _check(data)


# A GIF whose second block is cut after its extension introducer (hypothesis found it: IndexError in Pillow).
_CUT_GIF = bytes.fromhex(
    "47494638396108000600810000ff000000000000000000000021f90400050000002c000000000800060000080e"
    "0001081c48b0a0c18308130e0c080021"
)


def _tiff_with_a_second_frame_without_dimensions() -> bytes:
    """A valid TIFF whose next-IFD pointer leads to a directory with no width or height (TypeError in Pillow)."""
    data = bytearray(_encode(Image.new("RGB", (4, 3), (1, 2, 3)), "TIFF"))
    first = struct.unpack_from("<I", data, 4)[0]
    next_pointer = first + 2 + 12 * struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, next_pointer, len(data))
    compression_only = struct.pack("<HHII", 0x0103, 3, 1, 1)  # tag, SHORT, count, value
    return bytes(data + struct.pack("<H", 1) + compression_only + struct.pack("<I", 0))


@pytest.mark.parametrize(
    "data", [_CUT_GIF, _tiff_with_a_second_frame_without_dimensions()], ids=["gif", "tiff"]
)
def test_corrupt_later_frames_raise_image_decode_error(data):
    with pytest.raises(ImageDecodeError, match="^frame: "):
        decode_image(data, name="frame")

"""Decoding: every kind of file users have becomes the upright RGB image transformers' load_image gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_samples import awkward_files, bad_files, photo
from PIL import Image
from transformers.image_utils import load_image

from swinkit.data.decode import ImageDecodeError, ImageTooLargeError, decode_image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return awkward_files(tmp_path_factory.mktemp("awkward"))


@pytest.mark.parametrize(
    "kind", ["exif6", "cmyk", "rgb16", "palette", "gray", "gif", "webp", "tiff", "bmp", "rgba"]
)
def test_matches_transformers_load_image(files, kind):
    decoded = decode_image(files[kind])
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(load_image(str(files[kind]))))


def test_exif_orientation_6_is_turned_upright(files):
    upright = np.asarray(Image.open(photo("chelsea.png")).convert("RGB"), dtype=np.float32)
    decoded = np.asarray(decode_image(files["exif6"]), dtype=np.float32)
    assert decoded.shape == upright.shape  # stored sideways, shown upright
    assert np.abs(decoded - upright).mean() < 3  # only JPEG loss


def test_16_bit_grayscale_keeps_its_tones(files):
    camera = np.asarray(Image.open(photo("camera.png")))
    decoded = np.asarray(decode_image(files["gray16"]))
    assert decoded.shape == (*camera.shape, 3)
    np.testing.assert_array_equal(decoded[..., 0], camera)  # 16-bit v*257 back to v, not clipped to white
    np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_transparency_is_composited_on_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[:2, :, 0] = 255
    pixels[:2, :, 3] = 255  # top half opaque red, bottom half transparent black
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "t.png")
    decoded = np.asarray(decode_image(tmp_path / "t.png"))
    assert (decoded[:2] == [255, 0, 0]).all()
    assert (decoded[2:] == 255).all()


def test_animations_give_their_first_frame(files):
    for kind in ("gif", "webp"):
        assert decode_image(files[kind]).getpixel((5, 5)) == (255, 0, 0)


def test_bytes_and_pil_inputs(files):
    from_bytes = decode_image(files["cmyk"].read_bytes())
    from_pil = decode_image(Image.open(files["cmyk"]))
    np.testing.assert_array_equal(np.asarray(from_bytes), np.asarray(decode_image(files["cmyk"])))
    np.testing.assert_array_equal(np.asarray(from_pil), np.asarray(from_bytes))


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_files_raise_an_error_naming_them(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(ImageDecodeError, match=path.name):
        decode_image(path)


def test_missing_file_and_named_bytes(tmp_path):
    with pytest.raises(ImageDecodeError, match="nothere.jpg"):
        decode_image(tmp_path / "nothere.jpg")
    with pytest.raises(ImageDecodeError, match="row 7"):
        decode_image(b"garbage", name="row 7")


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, format="PNG")
    data = buffer.getvalue()
    truncated = data[: len(data) // 3]  # header intact, pixel data cut: decoding it would fail differently
    with pytest.raises(ImageDecodeError, match="exceed the limit"):
        decode_image(truncated, max_pixels=50_000)
    assert decode_image(data, max_pixels=60_000).size == (300, 200)


def test_errors_name_the_input_not_python_objects():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"plain text", name="item 3")
    assert str(info.value).startswith("item 3: not an image in a supported format (JPEG, PNG")
    big = io.BytesIO()
    Image.new("L", (200, 200)).save(big, format="PNG")
    with pytest.raises(ImageTooLargeError, match="200x200 pixels exceed the limit of 1,000"):
        decode_image(big.getvalue(), max_pixels=1000)


def test_extremely_elongated_images_are_refused_from_the_header():
    strip = io.BytesIO()
    Image.new("RGB", (20000, 1)).save(strip, format="PNG")
    with pytest.raises(ImageDecodeError, match="20000x1 is too elongated"):
        decode_image(strip.getvalue(), name="strip.png")
    assert decode_image(strip.getvalue(), max_aspect_ratio=None).size == (20000, 1)


def test_postscript_is_refused_without_being_interpreted():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="not an image in a supported format"):
        decode_image(eps, name="evil.eps")

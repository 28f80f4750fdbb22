"""Real photos shipped with scikit-image and the awkward files users have, written for the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "camera.png")


def photo(name: str) -> Path:
    """A photo bundled with scikit-image (no download)."""
    return SKIMAGE_DATA / name


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one) from an (H, W, 3) uint16 array."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    return path


def write_exif_rotated(path: Path, source: Path) -> Path:
    """``source`` stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise"), as phones write it."""
    image = Image.open(source).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def awkward_files(folder: Path) -> dict[str, Path]:
    """One file per kind of input the decoder must handle, named by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    cat = Image.open(photo("chelsea.png")).convert("RGB")
    camera = np.asarray(Image.open(photo("camera.png")))
    files = {"exif6": write_exif_rotated(folder / "exif6.jpg", photo("chelsea.png"))}
    files["cmyk"] = folder / "cmyk.jpg"
    cat.convert("CMYK").save(files["cmyk"], quality=95)
    files["gray16"] = folder / "gray16.png"
    Image.fromarray(camera.astype(np.uint16) * 257).save(files["gray16"])
    rgb16 = np.asarray(cat).astype(np.uint16) * 257
    files["rgb16"] = write_png16_rgb(folder / "rgb16.png", rgb16)
    files["palette"] = folder / "palette.png"
    cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(files["palette"])
    files["gray"] = folder / "gray.jpg"
    Image.fromarray(camera).save(files["gray"], quality=95)
    files["gif"] = folder / "anim.gif"
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["webp"] = folder / "anim.webp"
    frames[0].save(files["webp"], save_all=True, append_images=frames[1:], duration=100, lossless=True)
    files["tiff"] = folder / "cat.tiff"
    cat.save(files["tiff"])
    files["bmp"] = folder / "cat.bmp"
    cat.save(files["bmp"])
    files["rgba"] = photo("logo.png")
    files["la"] = folder / "la.png"
    Image.merge("LA", [Image.fromarray(camera), Image.fromarray(camera[::-1])]).save(files["la"])
    return files


def bad_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG and a text file with an image name."""
    folder.mkdir(parents=True, exist_ok=True)
    good = photo("rocket.jpg").read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = folder / "notes.png"
    text.write_text("this is not an image\n")
    return {"truncated": truncated, "text": text}

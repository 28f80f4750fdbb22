"""Generated segmentation scenes: discs, squares and triangles on textured, noisy backgrounds.

Class 0 is the background, 1 disc, 2 square, 3 triangle. Each class has a dominant colour channel (red,
green, blue) under random brightness and noise, on a grey-ish textured background; the shapes' forms and
colours both tell the classes apart.
"""

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "disc", "square", "triangle")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth, weakly coloured random field plus pixel noise: (size, size, 3) float."""
    grey = rng.uniform(50, 200, size=(4, 4, 1))
    coarse = np.clip(grey + rng.normal(0, 15, size=(4, 4, 3)), 0, 255).astype(np.float32)
    field = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR), np.float32
    )
    return field + rng.normal(0, 12, size=(size, size, 3))


def _shape_mask(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = rng.uniform(size * 0.1, size * 0.2)
    cy, cx = rng.uniform(r, size - r, size=2)
    if kind == 1:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    if kind == 2:
        return (abs(yy - cy) <= r * 0.9) & (abs(xx - cx) <= r * 0.9)
    # an upward triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r
    half = (yy - top) / (2 * r) * r * 1.1
    return (yy >= top) & (yy <= bottom) & (abs(xx - cx) <= half)


def make_scene(rng: np.random.Generator, size: int = 64, shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(image (size, size, 3) uint8 RGB, labels (size, size) uint8 in 0..3)."""
    image = _background(rng, size)
    labels = np.zeros((size, size), np.uint8)
    for _ in range(shapes):
        kind = int(rng.integers(1, 4))
        mask = _shape_mask(kind, rng, size)
        colour = rng.uniform(0, 90, size=3)
        colour[kind - 1] = rng.uniform(170, 255)
        image[mask] = colour + rng.normal(0, 8, size=(int(mask.sum()), 3))
        labels[mask] = kind
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_pairs(root: Path, count: int, seed: int = 0, size: int = 64, offset: int = 0) -> Path:
    """A folder with images/ (PNG) and masks/ of ``count`` scenes and classes.txt; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, labels = make_scene(rng, size)
        Image.fromarray(image).save(root / "images" / f"scene{i + offset:04d}.png")
        Image.fromarray(labels).save(root / "masks" / f"scene{i + offset:04d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def write_ade20k(root: Path, train: int, val: int, seed: int = 0, size: int = 64) -> Path:
    """An ADE20K tree (JPEG images, PNG annotations with 0 = other and class k stored as k + 1)."""
    rng = np.random.default_rng(seed)
    for split, count in (("training", train), ("validation", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, labels = make_scene(rng, size)
            Image.fromarray(image).save(root / "images" / split / f"ADE_{split}_{i:08d}.jpg", quality=95)
            Image.fromarray(labels).save(root / "annotations" / split / f"ADE_{split}_{i:08d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES[1:]) + "\n")  # 0 ("other") is not a class
    return root

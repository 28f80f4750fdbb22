"""Shared by the runtime tests: a swin_micro classifier fine-tuned in seconds on generated coloured shapes,
so its predictions are meaningful (confident, image-dependent) and runtimes can be compared on them."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import swinkit
from swinkit.inference import Predictor
from swinkit.presets import Preprocessing

LABELS = ["red", "green", "blue"]
SIZE = 32
STEPS = 20
COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230]], dtype=np.float32)


def shape_image(rng: np.random.Generator, label: int) -> Image.Image:
    """A noisy background tinted with the label's colour, with a square or disc of another colour on it."""
    tint = COLOURS[label] + rng.normal(0, 20, 3)
    image = 0.6 * tint + 0.4 * rng.normal(128, 40, (SIZE, SIZE, 3))
    side = int(rng.integers(6, 14))
    top, left = rng.integers(0, SIZE - side, 2)
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 2) ** 2
    mask = np.ones((side, side), bool) if rng.random() < 0.5 else disc
    image[top : top + side, left : left + side][mask] = COLOURS[(label + 1 + rng.integers(2)) % 3]
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, seed: int) -> list[tuple[Path, int]]:
    """``count`` PNGs of shapes (labels cycling) in ``folder``: (path, label) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        path = folder / f"{i:03d}_{LABELS[i % 3]}.png"
        shape_image(rng, i % 3).save(path)
        items.append((path, i % 3))
    return items


def _training_set(processor: object, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    labels = np.arange(count) % 3
    pixels = torch.stack([processor(shape_image(rng, int(k))) for k in labels])  # (N, 3, 32, 32)
    return pixels, torch.from_numpy(labels)


@functools.cache
def trained_classifier() -> Path:
    """swin_micro at 32 px trained on shapes (AdamW, one thread: seconds) and saved in the HF layout in a
    temporary folder (one per test session)."""
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="swinkit-runtime-test-")) / "model"
    model = swinkit.create_model("swin_micro", image_size=SIZE, labels=LABELS, drop_path_rate=0.0)
    preprocessing = Preprocessing(image_size=(SIZE, SIZE), crop_pct=None)
    processor = Predictor.from_pretrained(
        swinkit.save_pretrained(model, folder, preprocessing=preprocessing)
    ).processor
    pixels, labels = _training_set(processor, 96)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this small a model trains fastest on one thread
    try:
        for _ in range(STEPS):
            batch = torch.randint(0, len(labels), (16,), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(pixels[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return swinkit.save_pretrained(model.eval(), folder, preprocessing=preprocessing)

"""Which fine-tuning recipe should be the default? Train the same small models with each recipe and compare.

    python benchmarks/recipes.py [--output recipes_out] [--epochs 12] [--threads 1]

Datasets (both made or shipped locally, no downloads):
- ``digits``: scikit-learn's 8x8 handwritten digits, upscaled to 32 px RGB; 200 training images (10 classes,
  20 each), 300 validation images.
- ``objects``: fridgeObjects-style generated photos, 4 classes (a can / carton / milk bottle / water bottle
  shape in its typical colour, jittered, on clutter), 128 training images (32 each), 128 validation images.

Starts: ``scratch`` (random init) and ``pretrained`` (a swinv2_micro first trained on 1,500 *other*
generated images: a model whose weights already carry image structure, like an ImageNet checkpoint; its
head is replaced). Every cell is the best validation accuracy over the same epoch budget, the wall time,
and the seed; the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.trainer import Trainer

# The two recipes compared: the ImageNet from-scratch recipe (the defaults when this was written) and a
# light fine-tuning recipe.
RECIPES = {
    "imagenet": {},
    "finetune": {
        "augment.scale": [0.5, 1.0],
        "augment.randaugment_ops": 0,
        "augment.random_erasing": 0.0,
        "augment.mixup": 0.0,
        "augment.cutmix": 0.0,
        "optim.lr": 5e-4,
    },
}
IMAGENET_DEFAULTS = {  # pinned, so the comparison does not move when the defaults change
    "augment.scale": [0.08, 1.0],
    "augment.randaugment_ops": 2,
    "augment.randaugment_magnitude": 9.0,
    "augment.random_erasing": 0.25,
    "augment.mixup": 0.8,
    "augment.cutmix": 1.0,
    "augment.label_smoothing": 0.1,
    "optim.lr": 1e-4,
    "optim.weight_decay": 0.05,
    "schedule.warmup_epochs": 1.0,
}

OBJECT_CLASSES = ("can", "carton", "milk_bottle", "water_bottle")
OBJECT_COLORS = {
    "can": (200, 40, 40),
    "carton": (220, 160, 60),
    "milk_bottle": (235, 235, 225),
    "water_bottle": (60, 120, 220),
}


def write_digits(root: Path, seed: int) -> tuple[Path, Path]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    picked: dict[str, list[int]] = {"train": [], "val": []}
    counts = dict.fromkeys(range(10), 0)
    for i in order:
        label = int(digits.target[i])
        if counts[label] < 20:
            picked["train"].append(i)
            counts[label] += 1
        elif len(picked["val"]) < 300:
            picked["val"].append(i)
    for split, indices in picked.items():
        for i in indices:
            folder = root / "digits" / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").resize((32, 32), Image.BICUBIC).save(folder / f"{i}.png")
    return root / "digits" / "train", root / "digits" / "val"


def object_image(kind: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """Clutter plus one object whose shape names the class; colour, place and scale vary."""
    background = rng.integers(40, 200, (size // 4, size // 4, 3)).astype(np.uint8)
    image = Image.fromarray(background).resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    base = OBJECT_COLORS.get(kind, (128, 128, 128))  # each kind has its typical colour, as real objects do
    color = tuple(int(np.clip(c + rng.integers(-40, 41), 0, 255)) for c in base)
    w, h = int(rng.integers(size // 4, size // 2)), int(rng.integers(size // 3, 2 * size // 3))
    x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
    if kind == "can":
        draw.rectangle([x, y, x + w, y + h], fill=color)
        draw.ellipse([x, y - 3, x + w, y + 3], fill=tuple(255 - c for c in color))
    elif kind == "carton":
        draw.polygon(
            [(x, y + h // 4), (x + w // 2, y), (x + w, y + h // 4), (x + w, y + h), (x, y + h)], fill=color
        )
    elif kind == "milk_bottle":
        draw.rectangle([x, y + h // 3, x + w, y + h], fill=color)
        draw.rectangle([x + w // 3, y, x + 2 * w // 3, y + h // 3], fill=color)
    else:
        draw.ellipse([x, y + h // 4, x + w, y + h], fill=color)
        draw.rectangle([x + w // 3, y, x + 2 * w // 3, y + h // 4 + 2], fill=color)
    return image


def write_objects(
    root: Path, name: str, per_class: dict[str, int], seed: int, classes=OBJECT_CLASSES
) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for kind in classes:
            folder = root / name / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                object_image(kind, rng).save(folder / f"{i}.png")
    return root / name


def write_pretraining_set(root: Path) -> Path:
    """1,500 images of other classes (shapes with other geometry), so no label carries over."""
    rng = np.random.default_rng(99)
    for kind in ("ring", "cross", "stripes"):
        folder = root / "pretrain" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(500):
            image = object_image("can", rng).convert("L").convert("RGB")
            draw = ImageDraw.Draw(image)
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            if kind == "ring":
                draw.ellipse([8, 8, 40, 40], outline=c, width=5)
            elif kind == "cross":
                draw.line([8, 8, 40, 40], fill=c, width=5)
                draw.line([8, 40, 40, 8], fill=c, width=5)
            else:
                for y in range(4, 48, 10):
                    draw.line([0, y, 48, y], fill=c, width=3)
            image.save(folder / f"{i}.png")
    return root / "pretrain"


def base_config(train: Path, val: Path | None, output: Path, epochs: int) -> TrainConfig:
    config = TrainConfig()
    return apply_overrides(
        config,
        {
            "data.train": str(train),
            "data.val": str(val) if val else None,
            "model.preset": "swinv2_micro",
            "model.image_size": 32,
            "data.crop_pct": None,
            "schedule.epochs": epochs,
            "run.batch_size": 16,
            "run.output": str(output),
            "run.progress": False,
            "run.seed": 0,
            **IMAGENET_DEFAULTS,
        },
    )


def train(config: TrainConfig) -> tuple[float, float]:
    started = time.perf_counter()
    report = Trainer(config).fit()
    return max(h["accuracy"] for h in report["history"]), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("recipes_out"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.output
    datasets = {
        "digits": write_digits(root / "data", seed=0),
        "objects": tuple(
            write_objects(root / "data", "objects", {"train": 32, "val": 32}, 1) / s for s in ("train", "val")
        ),
    }
    pretrain = base_config(write_pretraining_set(root / "data"), None, root / "runs" / "pretrain", 6)
    pretrain = apply_overrides(pretrain, RECIPES["finetune"])
    if not (root / "runs" / "pretrain" / "config.json").is_file():
        acc, seconds = train(pretrain)
        print(
            f"pretraining start: {acc:.3f} accuracy on its own held-out images ({seconds:.0f} s)", flush=True
        )
    rows = []
    for data_name, (train_dir, val_dir) in datasets.items():
        for start in ("scratch", "pretrained"):
            for recipe, overrides in RECIPES.items():
                output = root / "runs" / f"{data_name}_{start}_{recipe}"
                config = apply_overrides(base_config(train_dir, val_dir, output, args.epochs), overrides)
                if start == "pretrained":
                    config.model.pretrained = str(root / "runs" / "pretrain")
                result = output / "metrics.json"
                if result.is_file():
                    report = json.loads(result.read_text())
                    acc, seconds = max(h["accuracy"] for h in report["history"]), float("nan")
                else:
                    acc, seconds = train(config)
                rows.append((data_name, start, recipe, acc, seconds))
                print(
                    f"{data_name:8s} {start:10s} {recipe:9s} best val accuracy {acc:.3f}  {seconds:.0f} s",
                    flush=True,
                )
    print("\n| dataset | start | recipe | best val accuracy | time (s) |\n|---|---|---|---|---|")
    for data_name, start, recipe, acc, seconds in rows:
        print(f"| {data_name} | {start} | {recipe} | {acc:.3f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

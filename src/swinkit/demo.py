"""``make demo``: the whole workflow on a real dataset that ships with scikit-learn, in a few CPU minutes.

1. scikit-learn's handwritten digits (1797 8x8 images) are written as PNGs in the fridgeObjects layout
   (one folder per class), with 50 images held out for the end;
2. ``swinv2_micro`` is trained from scratch at 32x32 px with the fine-tuning recipe (AdamW, warm-up and
   cosine, RandAugment, label smoothing, stochastic depth, gradient clipping), validated every epoch;
3. the held-out images are evaluated (metrics and plots) and predicted, with annotated images;
4. everything written is listed with the command that serves the model.

Run ``python -m swinkit.demo [--output DIR] [--epochs N]``; outputs go to ``./demo_output/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.evaluate import evaluate_model
from swinkit.engine.trainer import Trainer
from swinkit.inference import Predictor
from swinkit.visualize import save_prediction_image

IMAGE_SIZE = 32
HELD_OUT_PER_CLASS = 5

# The recipe, tuned for 8x8 digits: no flips (a mirrored 2 is no 2), mild crops, one RandAugment op.
RECIPE = {
    "model.preset": "swinv2_micro",
    "model.image_size": IMAGE_SIZE,
    "data.crop_pct": None,  # the PNGs are already at the model's size: evaluate them whole
    "data.val_split": 0.2,
    "augment.hflip": 0.0,
    "augment.scale": [0.6, 1.0],
    "augment.ratio": [0.8, 1.25],
    "augment.randaugment_ops": 1,
    "augment.randaugment_magnitude": 5.0,
    "augment.random_erasing": 0.0,
    "augment.mixup": 0.0,
    "augment.cutmix": 0.0,
    "augment.label_smoothing": 0.1,
    "optim.lr": 2e-3,
    "optim.weight_decay": 0.05,
    "schedule.epochs": 16,
    "schedule.warmup_epochs": 1.0,
    "run.batch_size": 32,
    "run.checkpoint_every": 20,
}


def write_digits(root: Path) -> tuple[Path, Path]:
    """The digits as 32x32 RGB PNGs: ``root/train/<digit>/`` and ``root/held_out/<digit>/``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    held = set()
    for digit in range(10):
        members = np.flatnonzero(digits.target == digit)
        held.update(rng.choice(members, HELD_OUT_PER_CLASS, replace=False).tolist())
    for index, (pixels, digit) in enumerate(zip(digits.images, digits.target)):
        gray = Image.fromarray((pixels / 16 * 255).astype(np.uint8))
        image = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC).convert("RGB")
        folder = root / ("held_out" if index in held else "train") / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:04d}.png")
    return root / "train", root / "held_out"


def predict_held_out(run: Path, held_out: Path, out: Path) -> list[tuple[str, str, str, float]]:
    """Predictions for one held-out image per digit, each also saved as an annotated PNG in ``out``."""
    predictor = Predictor.from_pretrained(run)
    paths = [sorted((held_out / str(d)).glob("*.png"))[0] for d in range(10)]
    rows = []
    for path, prediction in zip(paths, predictor.predict(paths, top_k=3)):
        with Image.open(path) as image:
            save_prediction_image(
                image.convert("RGB"), prediction.top, out / f"{path.parent.name}_{path.stem}.png"
            )
        label, prob = prediction.top[0]
        rows.append((str(path), path.parent.name, label, prob))
    return rows


def choose_threads() -> int:
    """torch's default, except on a busy machine: there, OpenMP threads wait on one another and one
    thread trains this small model several times faster than two."""
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] >= cores - 0.5
    return 1 if busy else torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinkit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: see choose_threads)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or choose_threads())
    out: Path = args.output
    run = out / "run"
    for stale in (run, out / "held_out_eval", out / "predictions"):
        shutil.rmtree(stale, ignore_errors=True)  # the demo's own earlier outputs

    started = time.perf_counter()
    print(f"using {torch.get_num_threads()} torch thread(s)")
    print(f"1/4 writing scikit-learn's digits as PNGs under {out / 'digits'}")
    train, held_out = write_digits(out / "digits")

    print("2/4 training swinv2_micro from scratch (validation every epoch)")
    overrides = {**RECIPE, "data.train": str(train), "run.output": str(run)}
    if args.epochs is not None:
        overrides["schedule.epochs"] = args.epochs
    config = apply_overrides(TrainConfig(), overrides)
    train_start = time.perf_counter()
    metrics = Trainer(config, reporter=tqdm.write).fit()
    train_seconds = time.perf_counter() - train_start

    print(f"3/4 evaluating the {HELD_OUT_PER_CLASS * 10} held-out images")
    held = evaluate_model(run, held_out, output=out / "held_out_eval")

    print("4/4 predicting held-out images (annotated copies in predictions/)")
    rows = predict_held_out(run, held_out, out / "predictions")
    for path, truth, label, prob in rows:
        mark = "ok" if truth == label else "WRONG"
        print(f"  {Path(path).name}  true {truth}  predicted {label} ({prob:.2f})  {mark}")

    total = time.perf_counter() - started
    print(
        f"\nvalidation accuracy {metrics['accuracy']:.4f} ({metrics['num_samples']} images, best epoch "
        f"{metrics['best_epoch']}); held-out accuracy {held['accuracy']:.4f}; "
        f"training {train_seconds:.0f} s, whole demo {total:.0f} s"
    )
    print(f"  model (Hugging Face layout):  {run}/config.json, model.safetensors, preprocessor_config.json")
    print(f"  metrics and per-epoch history: {run}/metrics.json")
    print(f"  plots:                         {run}/plots/ (curves, confusion matrix, precision-recall)")
    print(f"  held-out evaluation:           {out}/held_out_eval/")
    print(f"  annotated predictions:         {out}/predictions/")
    print(
        f"  training checkpoints:          {run}/checkpoints/ (resume with: swinkit train --output {run} --resume)"
    )
    print(f"serve it with:  swinkit serve --model {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

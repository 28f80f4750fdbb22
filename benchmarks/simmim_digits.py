"""SimMIM pretraining on unlabelled scikit-learn digits, then fine-tuning on 10% of the labels vs from scratch.

    PYTHONPATH=src python benchmarks/simmim_digits.py --work /tmp/simmim_digits

The 1,797 digits (8x8, grey) are upscaled to 32 px RGB. A stratified 20% is held out for the final accuracy;
the other images are the unlabelled pretraining set (``swinkit pretrain``, swinv2_micro_simmim, mask patch 8,
model patch 4; the first ``--unlabelled`` of them, to keep it to CPU minutes). A stratified ``--label-fraction`` of them, with labels, is then fine-tuned twice with the
default recipe of ``swinkit train`` and the same budget: from the pretrained run (``--pretrained RUN``) and
from scratch (``--preset swinv2_micro``). Prints one JSON line with the masked-L1 curve's first and last
values and both held-out accuracies. CPU minutes; not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from swinkit.cli import main
from swinkit.engine.evaluate import evaluate_model

SIZE = 32  # pixels; a multiple of the mask patch (8) and of the model patch (4)


def write_images(root: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """PNG files under ``root``: one folder per digit, or one flat folder when ``labels`` is None."""
    for i, image in enumerate(images):
        folder = root / (str(labels[i]) if labels is not None else "images")
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((image * (255 / 16)).round().astype(np.uint8))  # digits hold 0..16
        grey.resize((SIZE, SIZE), Image.Resampling.BICUBIC).convert("RGB").save(folder / f"{i}.png")
    return root


def make_sets(work: Path, label_fraction: float, unlabelled: int, seed: int) -> dict[str, Path]:
    """The first ``unlabelled`` images of the (shuffled) pool, a labelled stratified fraction of the pool and
    the held-out test set, as image folders."""
    digits = load_digits()
    pool_x, test_x, pool_y, test_y = train_test_split(
        digits.images, digits.target, test_size=0.2, stratify=digits.target, random_state=seed
    )
    _, few_x, _, few_y = train_test_split(
        pool_x, pool_y, test_size=label_fraction, stratify=pool_y, random_state=seed
    )
    return {
        "unlabelled": write_images(work / "unlabelled", pool_x[:unlabelled], None),
        "labelled": write_images(work / "labelled", few_x, few_y),
        "test": write_images(work / "test", test_x, test_y),
    }


def pretrain(sets: dict[str, Path], run: Path, args: argparse.Namespace) -> list[dict]:
    argv = ["pretrain", "--data", str(sets["unlabelled"]), "--output", str(run)]
    argv += ["--preset", "swinv2_micro_simmim", "--image-size", str(SIZE), "--mask-patch-size", "8"]
    argv += ["--epochs", str(args.pretrain_epochs), "--warmup-epochs", "1", "--batch-size", "32"]
    argv += ["--lr", str(args.pretrain_lr), "--set", "data.crop_pct=null", "--no-progress"]
    if main(argv) != 0:
        raise SystemExit("pretraining failed")
    return json.loads((run / "metrics.json").read_text())["history"]


def fine_tune(sets: dict[str, Path], run: Path, start: list[str], args: argparse.Namespace) -> float:
    """Held-out accuracy after ``swinkit train`` (default recipe) on the labelled fraction from ``start``."""
    argv = ["train", "--data", str(sets["labelled"]), "--output", str(run), *start]
    argv += ["--set", "data.crop_pct=null", "--set", "model.drop_path_rate=0.1", "--no-progress"]
    if args.finetune_lr is not None:
        argv += ["--lr", str(args.finetune_lr)]
    if args.finetune_epochs:
        argv += ["--epochs", str(args.finetune_epochs)]
    if main(argv) != 0:
        raise SystemExit(f"fine-tuning {run.name} failed")
    return evaluate_model(str(run), str(sets["test"]), batch_size=64)["accuracy"]


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the images and runs")
    parser.add_argument("--unlabelled", type=int, default=600, help="pretraining images (of the 1,437)")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3, help="peak lr of the short pretraining")
    parser.add_argument("--finetune-epochs", type=int, default=15, help="0: swinkit train's default (30)")
    parser.add_argument("--finetune-lr", type=float, default=None, help="default: swinkit train's (1e-4)")
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = make_sets(args.work, args.label_fraction, args.unlabelled, args.seed)
    started = time.perf_counter()
    history = pretrain(sets, args.work / "pretrain", args)
    pretrain_s = time.perf_counter() - started
    pretrained = fine_tune(
        sets, args.work / "from_pretrain", ["--pretrained", str(args.work / "pretrain")], args
    )
    scratch = fine_tune(
        sets, args.work / "from_scratch", ["--preset", "swinv2_micro", "--image-size", str(SIZE)], args
    )
    report = {
        "unlabelled_images": len(list(sets["unlabelled"].rglob("*.png"))),
        "labelled_images": len(list(sets["labelled"].rglob("*.png"))),
        "test_images": len(list(sets["test"].rglob("*.png"))),
        "masked_l1_first": history[0]["masked_l1"],
        "masked_l1_last": history[-1]["masked_l1"],
        "train_loss_first": history[0]["train_loss"],
        "train_loss_last": history[-1]["train_loss"],
        "pretrain_epochs": len(history),
        "pretrain_seconds": round(pretrain_s, 1),
        "accuracy_from_pretrain": pretrained,
        "accuracy_from_scratch": scratch,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main_benchmark()

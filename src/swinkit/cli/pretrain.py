"""``swinkit pretrain``: SimMIM masked image modeling on unlabelled images; resumable, same command under torchrun.

The defaults are the SimMIM recipe (``RECIPES["simmim"]`` of ``swinkit.engine.config``, the masked image
modeling task's default recipe): AdamW, weight decay 0.05, warm-up then cosine, gradient clipping 5.0,
learning rates given per 512 images and scaled by the total batch. A learning rate set explicitly (``--lr``,
``--set optim.lr=...`` or the YAML) is taken as it is. ``swinkit train --task masked_image_modeling`` resolves
the same config. The resolved values are all written to ``RUN/train_config.yaml``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tqdm import tqdm

from swinkit.cli.train import add_flags, add_run_options, requested_overrides
from swinkit.engine.config import TrainConfig, resolve

HELP = (
    "SimMIM self-supervised pretraining on unlabelled images (any folder tree, CSV or JSONL); "
    "resumable, torchrun-ready"
)

TASK = "masked_image_modeling"

# flag -> config key; flags left out keep the YAML's or the recipe's value
FLAGS: dict[str, tuple[str, Any, str]] = {
    "data": ("data.train", str, "unlabelled images: any folder tree (labels ignored), a CSV or a JSONL"),
    "val_data": ("data.val", str, "explicit held-out images for masked_l1 and the reconstruction grid"),
    "val_split": ("data.val_split", float, "fraction of --data held out (default 0.2)"),
    "output": ("run.output", str, "run folder: checkpoints, metrics, plots and the pretrained model"),
    "preset": ("model.preset", str, "SimMIM preset (e.g. swinv2_micro_simmim) or any classification preset"),
    "pretrained": ("model.pretrained", str, "continue from this SimMIM model: HF MIM folder, official file"),
    "image_size": ("model.image_size", int, "training resolution (a multiple of the mask patch)"),
    "drop_path_rate": ("model.drop_path_rate", float, "stochastic depth (default: the preset's)"),
    "mask_patch_size": ("mim.mask_patch_size", int, "side of a masked square in pixels (default 32)"),
    "mask_ratio": ("mim.mask_ratio", float, "fraction of squares masked (default 0.6)"),
    "epochs": ("schedule.epochs", int, "epochs (default 100)"),
    "warmup_epochs": ("schedule.warmup_epochs", float, "linear warm-up epochs (default 10)"),
    "batch_size": ("run.batch_size", int, "batch size per process (default 32)"),
    "lr": ("optim.lr", float, "peak learning rate, taken as it is (default: --base-lr scaled)"),
    "accum_steps": ("optim.accum_steps", int, "gradient accumulation steps"),
    "seed": ("run.seed", int, "seed of split, order, masks and initialisation"),
    "num_workers": ("data.num_workers", int, "DataLoader worker processes"),
    "device": ("run.device", str, "auto, cpu or cuda[:N]"),
    "bf16": ("run.bf16", bool, "bfloat16 autocast"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)
    parser.add_argument(
        "--base-lr",
        type=float,
        default=None,
        help="learning rate per 512 images (default 2e-4, SimMIM's); scaled by the total batch / 512",
    )
    add_run_options(parser, "data, model, optim, schedule, mim, run", "mim.mask_ratio=0.5")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (or, with --resume, the run's saved config) < YAML < --set < flags; then the learning rates
    not set explicitly are the recipe's scaled by the total batch (a resumed run keeps its own)."""
    from swinkit.cli.train import saved_config, world_size

    overrides = {"task": TASK, **requested_overrides(args, FLAGS)}
    config = resolve(saved_config(args), None, overrides, world_size=world_size(), base_lr=args.base_lr)
    if config.task != TASK:
        raise ValueError(
            f"swinkit pretrain trains {TASK} only, not {config.task!r}; use swinkit train for that"
        )
    if args.no_progress:
        config.run.progress = False
    return config


def run(args: argparse.Namespace) -> int:
    from swinkit.cli.train import check_resumable, finished
    from swinkit.engine.trainer import Trainer

    check_resumable(args)
    config = resolve_config(args)
    if finished(args, config):
        return 0
    trainer = Trainer(config, resume=args.resume, reporter=tqdm.write)
    metrics = trainer.fit()
    if trainer.context.is_main:
        out = config.run.output
        print(
            json.dumps({"masked_l1": metrics["masked_l1"], "best_epoch": metrics["best_epoch"], "run": out})
        )
        print(f"pretrained SimMIM model (Hugging Face MIM layout): {out}; reconstructions in {out}/plots")
        print(
            f"fine-tune a classifier from its encoder with: swinkit train --pretrained {out} --data LABELLED --output RUN"
        )
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C says: the run continues from its last checkpoint."""
    return (
        f"the run in {args.output} continues from its last checkpoint with "
        f"swinkit pretrain --output {args.output} --resume"
    )

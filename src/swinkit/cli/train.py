"""``swinkit train``: fine-tune (or train from scratch) on a folder, CSV or JSONL; same command under torchrun."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from swinkit.engine.config import RECIPES, TrainConfig, apply_overrides, apply_recipe, flatten, load_yaml

HELP = (
    "fine-tune a Swin model on labelled images (class folders, CSV or Azure JSONL); resumable, torchrun-ready"
)

# flag -> config key; flags left out keep the YAML's or the default value
FLAGS: dict[str, tuple[str, Any, str]] = {
    "task": ("task", str, "what to train (default classification; the tasks of swinkit.tasks)"),
    "data": ("data.train", str, "training images: a folder of class folders, a CSV (path,label) or a JSONL"),
    "val_data": ("data.val", str, "explicit validation set (same formats)"),
    "val_split": ("data.val_split", float, "fraction of --data held out for validation (default 0.2)"),
    "output": ("run.output", str, "run folder: checkpoints, metrics, plots and the final model"),
    "preset": ("model.preset", str, "architecture preset (see `swinkit models`)"),
    "pretrained": ("model.pretrained", str, "start from these weights: hub id, HF folder, checkpoint file"),
    "image_size": ("model.image_size", int, "training resolution"),
    "epochs": ("schedule.epochs", int, "epochs (default 30)"),
    "batch_size": ("run.batch_size", int, "batch size per process (default 32)"),
    "lr": ("optim.lr", float, "peak learning rate (default 5e-4; 1e-4 in --recipe imagenet)"),
    "accum_steps": ("optim.accum_steps", int, "gradient accumulation steps"),
    "freeze_stages": ("optim.freeze_stages", int, "freeze the patch embedding and the first N stages"),
    "patience": ("run.patience", int, "early stopping: epochs without improvement"),
    "seed": ("run.seed", int, "seed of split, order, augmentation and initialisation"),
    "num_workers": ("data.num_workers", int, "DataLoader worker processes"),
    "device": ("run.device", str, "auto, cpu or cuda[:N]"),
    "multi_label": ("data.multi_label", bool, "multi-label task (default: inferred from the labels)"),
    "ema": ("run.ema", bool, "keep, evaluate and save an exponential moving average of the weights"),
    "bf16": ("run.bf16", bool, "bfloat16 autocast"),
}


def add_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, Any, str]]) -> None:
    """One option per entry of a flag table (flag -> config key, type, help); booleans take no value."""
    for flag, (_, kind, text) in flags.items():
        name = "--" + flag.replace("_", "-")
        if kind is bool:
            parser.add_argument(name, action="store_const", const=True, default=None, help=text)
        else:
            parser.add_argument(name, type=kind, default=None, help=text)


def add_run_options(parser: argparse.ArgumentParser, sections: str, example: str) -> None:
    """--config, --set, --resume and --no-progress, which every training command takes."""
    parser.add_argument("--config", help=f"YAML file with sections {sections}")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=f"any config key, e.g. {example}"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --output from its last checkpoint, exactly"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (one line per epoch only)"
    )


def requested_overrides(args: argparse.Namespace, flags: dict[str, tuple[str, Any, str]]) -> dict[str, Any]:
    """The settings asked for, by rising priority: the YAML file, then --set, then the explicit flags."""
    overrides: dict[str, Any] = flatten(load_yaml(args.config)) if args.config else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    overrides.update(
        {key: getattr(args, flag) for flag, (key, _, _) in flags.items() if getattr(args, flag) is not None}
    )
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="named recipe under the YAML and flags: finetune (default; light augmentation, lr 5e-4) or "
        "imagenet (RandAugment 2/9, erasing 0.25, Mixup 0.8, CutMix 1.0, lr 1e-4: from scratch, large data); "
        "mmseg (the default of --task semantic_segmentation: AdamW 6e-5, warm-up 1500 and poly to 160k iterations)",
    )
    add_run_options(parser, "data, model, optim, schedule, augment, run", "optim.layer_decay=0.9")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults (or, with --resume, the run's saved config) < recipe < YAML file < --set < explicit flags."""
    config = TrainConfig()
    saved = Path(args.output) / "train_config.yaml" if args.resume and args.output else None
    resumed = saved is not None and saved.is_file()
    if resumed:
        config = TrainConfig.from_dict(load_yaml(saved))
    overrides = requested_overrides(args, FLAGS)
    recipe = args.recipe or (None if resumed else task_recipe(str(overrides.get("task", config.task))))
    if recipe:
        apply_recipe(config, recipe)
    apply_overrides(config, overrides)
    if args.no_progress:
        config.run.progress = False
    return config


def task_recipe(task: str) -> str | None:
    """The recipe a fresh run of ``task`` starts from without --recipe (its ``default_recipe``, e.g. mmseg)."""
    from swinkit.tasks import get_task

    return getattr(get_task(task), "default_recipe", None)


def check_resumable(args: argparse.Namespace) -> None:
    """``--resume`` needs ``--output`` naming a run that holds a checkpoint (before any config is read)."""
    from swinkit.engine.checkpoint import LAST, checkpoint_dir

    if args.resume and not args.output:
        raise ValueError("--resume needs --output RUN (the run to continue)")
    if args.resume and not (checkpoint_dir(args.output) / LAST).is_file():
        raise ValueError(
            f"no checkpoint to resume in {args.output} (no checkpoints/{LAST}); start the run without --resume"
        )


def finished(args: argparse.Namespace, config: TrainConfig) -> bool:
    """Whether ``--resume`` names a run that already finished (said in one line): nothing to do."""
    from swinkit.engine.checkpoint import finished_run

    if (
        not args.resume
        or (done := finished_run(args.output, config.schedule.epochs, config.schedule.iterations)) is None
    ):
        return False
    best = f", best at epoch {done['best_epoch']}" if done.get("best_epoch") else ""
    print(f"{args.output} already finished ({len(done['history'])} epochs{best}); nothing to resume")
    return True


def run(args: argparse.Namespace) -> int:
    from swinkit.engine.trainer import Trainer

    check_resumable(args)
    config = resolve_config(args)
    if finished(args, config):
        return 0
    trainer = Trainer(config, resume=args.resume, reporter=tqdm.write)
    metrics = trainer.fit()
    if trainer.context.is_main:
        name = metrics["primary_metric"]
        print(
            json.dumps({name: metrics[name], "best_epoch": metrics["best_epoch"], "run": config.run.output})
        )
        print(f"serve it with: swinkit serve --model {config.run.output}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C says: the run continues from its last checkpoint."""
    return (
        f"the run in {args.output} continues from its last checkpoint with "
        f"swinkit train --output {args.output} --resume"
    )

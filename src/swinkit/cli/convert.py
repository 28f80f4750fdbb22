"""``swinkit convert SRC DST``: any known checkpoint layout to the Hugging Face layout.

The output folder (config.json with id2label, model.safetensors, preprocessor_config.json) loads in both
swinkit and ``transformers.AutoModelForImageClassification`` with identical outputs. Backbone-only
checkpoints (mmsegmentation, mmdetection) have no classifier: ``--num-classes N`` makes one whose final
norm is the last stage's output norm and whose head is freshly initialised (the other stages' output
norms have no place in the classification layout and are dropped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swinkit import layouts
from swinkit.data.preprocess import preprocessing_for
from swinkit.loading import load_checkpoint, model_from_checkpoint, save_pretrained
from swinkit.models.swin import ClassifierConfig

HELP = "convert a checkpoint (official, HF, timm, torchvision, OpenMMLab) to the Hugging Face layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint file, HF folder, hub id or preset name")
    parser.add_argument("dst", type=Path, help="output folder")
    parser.add_argument("--format", choices=sorted(layouts.LAYOUTS), help="source layout (default: detect)")
    parser.add_argument(
        "--preset", help="take the architecture from this preset instead of the tensor shapes"
    )
    parser.add_argument("--num-classes", type=int, help="write a fresh head with this many classes")


def describe(config: ClassifierConfig) -> str:
    """One line naming the architecture."""
    head = f"{config.num_classes} classes" if config.num_classes else "no classifier head"
    t = config.trunk
    return (
        f"Swin v{t.version}, embed {t.embed_dim}, depths {list(t.depths)}, "
        f"heads {list(t.num_heads)}, window {t.window_size}, image {t.image_size}, {head}"
    )


def run(args: argparse.Namespace) -> int:
    if str(args.dst) == "-":
        raise ValueError("DST names the output folder, and '-' (standard output) cannot hold a model folder")
    ckpt = load_checkpoint(args.src, layout=args.format, preset=args.preset)
    print(f"detected layout: {ckpt.layout} ({describe(ckpt.config)})")
    model = model_from_checkpoint(ckpt, num_classes=args.num_classes)
    if model.config.num_classes == 0:
        raise ValueError(
            "the checkpoint has no classifier head (a backbone); pass --num-classes N to write a classifier "
            "with a freshly initialised head"
        )
    # the checkpoint's own preprocessor config is copied as it is; otherwise preprocessing_for decides
    preprocessing = ckpt.preprocessing
    if not preprocessing:  # as preprocessing_for, an empty config is no config
        preprocessing = preprocessing_for(ckpt, preset=args.preset).to_preprocessor_config()
    save_pretrained(model, args.dst, preprocessing=preprocessing)
    print(
        f"wrote {args.dst} (config.json, model.safetensors, preprocessor_config.json): {describe(model.config)}"
    )
    return 0

"""``swinkit convert SRC DST``: any known checkpoint layout to the Hugging Face layout (``--to hf``, the
default), to mmsegmentation's (``--to mmseg``) or to the official one (``--to official``).

The output folder (config.json with id2label, model.safetensors, preprocessor_config.json) loads in both
swinkit and ``transformers.AutoModelForImageClassification`` with identical outputs. Backbone-only
checkpoints (mmsegmentation, mmdetection) have no classifier: ``--num-classes N`` makes one whose final
norm is the last stage's output norm and whose head is freshly initialised (the other stages' output
norms have no place in the classification layout and are dropped).

``--to mmseg`` writes a Swin checkpoint as the backbone file mmsegmentation's ``swin2mmseg.py`` writes (a
bare state dict; an official-layout source is converted key for key, any other through the canonical
names), and ``--to official`` reads such a file (or any Swin checkpoint) back as ``{'model': state_dict}``
in the official layout. A semantic segmentation model (UperNet: an mmseg segmentor file or a transformers
folder) converts between ``--to mmseg`` (``{'state_dict', 'meta'}`` file) and ``--to hf`` (folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swinkit import layouts
from swinkit.checkpoint_io import load_state_file, save_torch
from swinkit.data.preprocess import preprocessing_for
from swinkit.layouts import swin2mmseg
from swinkit.loading import load_checkpoint, model_from_checkpoint, save_pretrained
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import SwinConfig
from swinkit.sources import read_description, resolve_source

HELP = "convert a checkpoint (official, HF, timm, torchvision, OpenMMLab, UperNet) to the HF, mmseg or official layout"
TARGETS = ("hf", "mmseg", "official")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint file, HF folder, hub id or preset name")
    parser.add_argument("dst", type=Path, help="output folder")
    parser.add_argument("--format", choices=sorted(layouts.LAYOUTS), help="source layout (default: detect)")
    parser.add_argument(
        "--preset", help="take the architecture from this preset instead of the tensor shapes"
    )
    parser.add_argument("--num-classes", type=int, help="write a fresh head with this many classes")
    parser.add_argument(
        "--to",
        choices=TARGETS,
        default="hf",
        help="output layout: HF folder (default), mmseg or official file",
    )


def describe_trunk(t: SwinConfig) -> str:
    """The trunk's architecture in a few words."""
    return (
        f"Swin v{t.version}, embed {t.embed_dim}, depths {list(t.depths)}, "
        f"heads {list(t.num_heads)}, window {t.window_size}, image {t.image_size}"
    )


def describe(config: ClassifierConfig) -> str:
    """One line naming a classifier's architecture."""
    head = f"{config.num_classes} classes" if config.num_classes else "no classifier head"
    return f"{describe_trunk(config.trunk)}, {head}"


def _is_segmentation(source: str) -> bool:
    """Whether ``source`` is an UperNet (its description names one); a file that is no checkpoint is refused
    here, naming what it is."""
    path = resolve_source(source)
    if path.is_file():
        load_state_file(path)
    config = read_description(path)[1]
    return config is not None and "UperNetForSemanticSegmentation" in (config.get("architectures") or [])


def convert_segmentation(source: str, destination: Path, target: str) -> None:
    """An UperNet to a transformers folder (``hf``) or an mmseg segmentor file (``mmseg``)."""
    from swinkit.models.segmentation.checkpoints import save_hf, save_mmseg
    from swinkit.tasks.segmentation_model import load_upernet

    if target == "official":
        raise ValueError("the official layout holds Swin classifiers; an UperNet converts to hf or mmseg")
    model = load_upernet(source)[0]
    (save_hf if target == "hf" else save_mmseg)(model, destination)
    print(
        f"wrote {destination}: UperNet, {model.num_classes} classes, {describe_trunk(model.config.backbone)}"
    )


def swin_state_dict(source: str, layout: str | None, preset: str | None) -> tuple[str, dict]:
    """(layout, state dict in official names): an official file's own tensors (buffers kept, as
    ``swin2mmseg.py`` reads them), any other layout's canonical tensors (the official names, no buffers)."""
    ckpt = load_checkpoint(source, layout=layout, preset=preset)
    if ckpt.layout == "official" and ckpt.path is not None and ckpt.path.is_file():
        raw = layouts.unwrap(load_state_file(ckpt.path))
        if not any(k.startswith("encoder.") for k in raw):  # a SimMIM file's encoder: via the canonical names
            return ckpt.layout, raw
    return ckpt.layout, dict(ckpt.state_dict)


def convert_swin_file(args: argparse.Namespace) -> None:
    """A Swin checkpoint as swin2mmseg.py's backbone file (``mmseg``) or as an official file (``official``)."""
    layout, state_dict = swin_state_dict(args.src, args.format, args.preset)
    if args.to == "mmseg":
        save_torch(swin2mmseg.official_to_mmseg(state_dict), args.dst)
    else:
        if layout == "mmlab":  # the backbone names swin2mmseg.py wrote, read back key for key
            state_dict = swin2mmseg.mmseg_to_official(layouts.unwrap(load_state_file(args.src)))
        save_torch({"model": state_dict}, args.dst)
    print(f"detected layout: {layout}; wrote {args.dst} in the {args.to} layout ({len(state_dict)} tensors)")


def run(args: argparse.Namespace) -> int:
    if str(args.dst) == "-":
        raise ValueError("DST names the output folder or file, and '-' (standard output) cannot hold a model")
    if _is_segmentation(args.src):
        convert_segmentation(args.src, args.dst, args.to)
        return 0
    if args.to != "hf":
        convert_swin_file(args)
        return 0
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

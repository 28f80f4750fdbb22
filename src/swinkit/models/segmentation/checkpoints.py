"""Reading and writing UperNet checkpoints: mmsegmentation files and transformers folders.

Every reader maps the file to the canonical UperNet state dict (``swinkit.layouts.heads``), works out the
architecture (from the file's config, or from the tensor shapes), builds the model and copies the tensors
strictly: missing, unexpected and mis-shaped keys are all named.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from swinkit.checkpoint_io import atomic_write_json, load_state_file, load_torch, save_safetensors, save_torch
from swinkit.layouts import unwrap
from swinkit.layouts.common import infer_config
from swinkit.layouts.heads import hf_upernet, mmseg
from swinkit.loading import load_into
from swinkit.models.segmentation.config import UperNetConfig
from swinkit.models.segmentation.upernet import UperNet, build_upernet

_BN_COUNTER = "num_batches_tracked"
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], labels: tuple[str, ...] | None = None
) -> UperNetConfig:
    """The architecture of a canonical UperNet state dict, read from its tensor shapes.

    The pool scales cannot be read (only their number): mmseg's (1, 2, 3, 6) are assumed when there are four.
    """
    if "decode_head.conv_seg.weight" not in state_dict:
        raise ValueError(
            "not a segmentation checkpoint: it has no decode head classifier (decode_head.conv_seg)"
        )
    trunk = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    backbone = infer_config(trunk).replace(num_classes=0, labels=None, drop_path_rate=0.3)
    num_classes, channels = state_dict["decode_head.conv_seg.weight"].shape[:2]
    scales = len({m.group(1) for k in state_dict if (m := re.match(r"decode_head\.psp_modules\.(\d+)\.", k))})
    if scales != 4:
        raise ValueError(
            f"the checkpoint has {scales} pyramid-pooling branches; their pool sizes cannot be read"
        )
    head = dict(num_classes=num_classes, channels=channels, labels=labels, use_auxiliary_head=False)
    aux = state_dict.get("auxiliary_head.convs.0.conv.weight")
    if aux is not None:
        if aux.shape[1] not in backbone.stage_dims:
            raise ValueError(
                f"the auxiliary head reads {aux.shape[1]} channels, the width of no backbone stage {backbone.stage_dims}"
            )
        convs = {m.group(1) for k in state_dict if (m := re.match(r"auxiliary_head\.convs\.(\d+)\.", k))}
        head.update(
            use_auxiliary_head=True,
            aux_channels=aux.shape[0],
            aux_in_index=backbone.stage_dims.index(aux.shape[1]),
            aux_num_convs=len(convs),
            aux_concat_input="auxiliary_head.conv_cat.conv.weight" in state_dict,
        )
    return UperNetConfig(backbone=backbone, **head)


def load_state_dict(model: UperNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy a canonical state dict into ``model`` strictly (BatchNorm step counters may be absent)."""
    target = model.state_dict()
    full = dict(state_dict)
    for name in target:
        if name.endswith(_BN_COUNTER) and name not in full:
            full[name] = torch.zeros((), dtype=torch.long)
    load_into(model, full)


def model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: UperNetConfig | None = None
) -> UperNet:
    """An UperNet holding the canonical ``state_dict`` (architecture read from the shapes when ``config`` is None)."""
    model = build_upernet(config or config_from_state_dict(state_dict))
    load_state_dict(model, state_dict)
    return model


def save_mmseg(model: UperNet, path: str | os.PathLike) -> None:
    """Write ``model`` as an mmsegmentation checkpoint (``{'state_dict', 'meta'}``, torch.save format)."""
    save_torch(mmseg.to_checkpoint(model.state_dict(), model.config), path)


def load_mmseg(path: str | os.PathLike, config: UperNetConfig | None = None) -> UperNet:
    """An UperNet from an mmsegmentation segmentor checkpoint (``config`` from the shapes and meta when None)."""
    checkpoint = load_torch(path)
    state_dict = unwrap(checkpoint)
    if not mmseg.detect(state_dict):
        raise ValueError(f"{path} is not an mmsegmentation segmentor with a Swin backbone and a decode head")
    canonical = mmseg.to_canonical(state_dict)
    if config is None:
        config = mmseg.config_from_meta(checkpoint)
    if config is None:
        config = config_from_state_dict(canonical, labels=mmseg.classes_from_meta(checkpoint))
    return model_from_state_dict(canonical, config)


def save_hf(model: UperNet, folder: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` as a folder ``transformers.UperNetForSemanticSegmentation.from_pretrained`` loads;
    ``metadata`` (string pairs, e.g. swinkit's description) goes into the safetensors header."""
    config = hf_upernet.config_to_hf(model.config)  # raises before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(
        hf_upernet.from_canonical(model.state_dict(), model.config), folder / "model.safetensors", metadata
    )
    atomic_write_json(folder / "config.json", config)


def load_hf(folder: str | os.PathLike) -> UperNet:
    """An UperNet from a transformers UperNet folder (``config.json`` and ``model.safetensors`` or, as the
    ``openmmlab/upernet-swin-*`` hub repositories, ``pytorch_model.bin``)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    weights = next((folder / n for n in _HF_WEIGHTS if (folder / n).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise ValueError(
            f"{folder} is not a transformers model folder: it needs config.json and one of {', '.join(_HF_WEIGHTS)}"
        )
    config = hf_upernet.config_from_hf(json.loads(config_file.read_text()))
    state_dict = load_state_file(weights)
    if not hf_upernet.detect(state_dict):
        raise ValueError(f"{weights} does not hold a transformers UperNet with a Swin backbone")
    return model_from_state_dict(hf_upernet.to_canonical(state_dict), config)

"""The UperNet a segmentation run trains or evaluates: read from a saved model, or built from a preset with
an optional pretrained Swin backbone.

A saved UperNet is a transformers ``UperNetForSemanticSegmentation`` folder (what ``swinkit train`` exports,
or an ``openmmlab/upernet-swin-*`` download), an mmsegmentation checkpoint file, or a swinkit checkpoint file
carrying its description (``RUN/checkpoints/best.safetensors``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from swinkit.checkpoint_io import load_state_file, load_torch
from swinkit.data.segmentation import SegmentationProcessor
from swinkit.layouts import unwrap
from swinkit.layouts.heads import hf_upernet, mmseg
from swinkit.loading import from_pretrained, load_into
from swinkit.models.segmentation.checkpoints import load_hf, load_mmseg, model_from_state_dict
from swinkit.models.segmentation.config import UperNetConfig, get_segmentation_preset
from swinkit.models.segmentation.upernet import UperNet, build_upernet
from swinkit.sources import DESCRIPTION_KEYS, PREPROCESSOR_FILE, resolve_source

log = logging.getLogger(__name__)

UPERNET_ARCHITECTURE = "UperNetForSemanticSegmentation"
_CLASSIFIERS = ("decode_head.conv_seg.", "auxiliary_head.conv_seg.")


def _file_tensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the loaded file, its tensor dict) of a checkpoint file."""
    loaded = load_state_file(path) if path.suffix == ".safetensors" else load_torch(path)
    return loaded, unwrap(loaded)


def is_upernet(source: str | os.PathLike) -> bool:
    """Whether ``source`` holds a whole UperNet (not just a Swin classifier or backbone)."""
    path = resolve_source(source)
    if path.is_dir():
        config = path / "config.json"
        return config.is_file() and UPERNET_ARCHITECTURE in (
            json.loads(config.read_text()).get("architectures") or []
        )
    _, tensors = _file_tensors(path)
    return bool(
        mmseg.detect(tensors) or hf_upernet.detect(tensors) or "decode_head.conv_seg.weight" in tensors
    )


def _described_file(path: Path) -> tuple[UperNet, SegmentationProcessor]:
    """An UperNet from a swinkit checkpoint file (canonical tensors) and the preprocessing it describes."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    config, preprocessing = (metadata.get(key) for key in DESCRIPTION_KEYS)
    tensors = load_state_file(path)
    state = hf_upernet.to_canonical(tensors) if hf_upernet.detect(tensors) else tensors
    model = model_from_state_dict(state, hf_upernet.config_from_hf(json.loads(config)) if config else None)
    if preprocessing is None:
        return model, SegmentationProcessor()
    return model, SegmentationProcessor.from_preprocessor_config(json.loads(preprocessing))


def load_upernet(source: str | os.PathLike) -> tuple[UperNet, SegmentationProcessor]:
    """A saved UperNet (see the module docstring) in eval mode and its evaluation preprocessing (the saved
    preprocessor_config.json, else mmseg's test pipeline)."""
    path = resolve_source(source)
    processor = SegmentationProcessor()
    if path.is_dir():
        model = load_hf(path)
        if (path / PREPROCESSOR_FILE).is_file():
            saved = json.loads((path / PREPROCESSOR_FILE).read_text())
            processor = SegmentationProcessor.from_preprocessor_config(saved)
    elif path.suffix == ".safetensors":
        model, processor = _described_file(path)
    else:
        model = load_mmseg(path)
    return model.eval(), processor


def fit_classes(model: UperNet, classes: Sequence[str]) -> UperNet:
    """``model`` predicting ``classes``: the same model renamed when only names differ, else a copy whose
    two classifiers (``conv_seg``) are new, said in the log."""
    classes = tuple(classes)
    config = model.config
    if config.labels == classes:
        return model
    if config.num_classes == len(classes):
        model.config = config.replace(labels=classes)
        return model
    log.warning(
        "fresh classifiers: the checkpoint predicts %d classes but the data has %d; both conv_seg layers are "
        "newly initialised",
        config.num_classes,
        len(classes),
    )
    fresh = build_upernet(config.replace(labels=classes))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(_CLASSIFIERS)}
    load_into(fresh, kept, allow_missing=list(_CLASSIFIERS))
    return fresh


def preset_upernet(
    preset: str,
    classes: Sequence[str],
    backbone_source: str | None = None,
    drop_path_rate: float | None = None,
) -> UperNet:
    """A fresh UperNet of ``preset`` for ``classes``; with ``backbone_source`` (a Swin classifier or
    backbone in any layout swinkit reads) its backbone holds those weights, as mmseg's ``init_cfg``
    ``Pretrained`` backbone (position tables resized to the preset's windows)."""
    config: UperNetConfig = get_segmentation_preset(preset).config.replace(labels=tuple(classes))
    if drop_path_rate is not None:
        config = config.replace(backbone=config.backbone.replace(drop_path_rate=drop_path_rate))
    if backbone_source is None:
        return build_upernet(config)
    b = config.backbone
    trunk = from_pretrained(
        backbone_source,
        backbone=True,
        out_indices=range(b.num_stages),
        out_norms=True,
        window_size=b.window_size,
        drop_path_rate=b.drop_path_rate,
    )
    shape = ("embed_dim", "depths", "num_heads")
    if any(getattr(trunk.config, k) != getattr(b, k) for k in shape):
        log.warning("the pretrained backbone is not %s's Swin size; the heads are built on its own", preset)
    model = build_upernet(config.replace(backbone=trunk.config))
    load_into(model.backbone, trunk.state_dict())
    return model

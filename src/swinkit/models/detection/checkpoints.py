"""Reading and writing detector checkpoints: mmdetection files and swinkit's own folder layout.

Every reader maps the file to the canonical detector state dict (:mod:`swinkit.layouts.heads.mmdet`), works out
the architecture (from the file's swinkit meta, else from the tensor shapes), builds the model and copies the
tensors strictly: missing, unexpected and mis-shaped keys are all named
(:class:`swinkit.loading.CheckpointMismatchError`).

swinkit's layout is a folder with ``config.json`` (``architectures``, labels and the whole
:class:`MaskRCNNConfig` under ``swinkit_detection``), ``model.safetensors`` (canonical names, carrying the same
description as its metadata, like every swinkit checkpoint) and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from swinkit.checkpoint_io import (
    atomic_write_json,
    load_state_file,
    load_torch,
    make_folder,
    save_safetensors,
    save_torch,
)
from swinkit.layouts import unwrap
from swinkit.layouts.common import infer_config
from swinkit.layouts.heads import mmdet
from swinkit.layouts.heads.mmseg import classes_from_meta
from swinkit.loading import DESCRIPTION_KEYS, PREPROCESSOR_FILE, load_into
from swinkit.models.detection.config import MaskRCNNConfig
from swinkit.models.detection.mask_rcnn import MaskRCNN, build_mask_rcnn
from swinkit.models.detection.preprocess import DetectionPreprocessor

MODEL_TYPE = "swinkit_detection"  # config.json's model_type for a saved detector
CONFIG_KEY = "swinkit_detection"  # config.json's key holding MaskRCNNConfig.to_dict()
ARCHITECTURES = {"MaskRCNN": "SwinMaskRCNN", "FasterRCNN": "SwinFasterRCNN"}


def config_to_json(config: MaskRCNNConfig) -> dict[str, Any]:
    """The ``config.json`` of a saved detector."""
    labels = config.label_names
    return {
        "architectures": [ARCHITECTURES[config.architecture]],
        "model_type": MODEL_TYPE,
        "num_labels": config.num_classes,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        CONFIG_KEY: config.to_dict(),
    }


def is_detection_config(config_dict: Mapping[str, Any]) -> bool:
    """Whether a saved ``config.json`` (as a dict) describes a swinkit detector."""
    return config_dict.get("model_type") == MODEL_TYPE and isinstance(config_dict.get(CONFIG_KEY), Mapping)


def config_from_json(config_dict: Mapping[str, Any]) -> MaskRCNNConfig:
    """The MaskRCNNConfig of a saved detector's ``config.json``."""
    if not is_detection_config(config_dict):
        raise ValueError(
            f"config.json does not describe a swinkit detector (model_type {config_dict.get('model_type')!r})"
        )
    return MaskRCNNConfig.from_dict(dict(config_dict[CONFIG_KEY]))


def _count(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], labels: tuple[str, ...] | None = None
) -> MaskRCNNConfig:
    """The architecture of a canonical detector state dict, read from its tensor shapes.

    Anchor scales and ratios cannot be read (only their number): mmdet's one scale and three ratios are
    assumed, and a head with another number of anchors is refused.
    """
    if "roi_head.bbox_head.fc_cls.weight" not in state_dict or mmdet.HEAD_MARKER not in state_dict:
        raise ValueError(
            "not a two-stage detector checkpoint: it has no RPN or box classifier (rpn_head.rpn_cls, roi_head.bbox_head.fc_cls)"
        )
    trunk = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    backbone = infer_config(trunk).replace(drop_path_rate=0.2)
    anchors = state_dict[mmdet.HEAD_MARKER].shape[0]
    if anchors != 3:
        raise ValueError(
            f"the RPN predicts {anchors} anchors per location; only mmdet's 3 (1 scale x 3 ratios) can be read"
        )
    fpn_channels = state_dict["neck.lateral_convs.0.conv.weight"].shape[0]
    num_fcs = _count(state_dict, r"roi_head\.bbox_head\.shared_fcs\.(\d+)\.")
    roi_area = state_dict["roi_head.bbox_head.shared_fcs.0.weight"].shape[1] // fpn_channels
    fields: dict[str, Any] = dict(
        num_classes=state_dict["roi_head.bbox_head.fc_cls.weight"].shape[0] - 1,
        fpn_channels=fpn_channels,
        num_outs=backbone.num_stages + 1,  # mmdet's Swin detectors: one max-pooled extra level
        fc_channels=state_dict["roi_head.bbox_head.fc_cls.weight"].shape[1],
        num_shared_fcs=num_fcs,
        bbox_roi_size=round(roi_area**0.5),
        with_mask="roi_head.mask_head.conv_logits.weight" in state_dict,
        labels=labels,
    )
    if fields["with_mask"]:
        fields["mask_num_convs"] = _count(state_dict, r"roi_head\.mask_head\.convs\.(\d+)\.")
        fields["mask_channels"] = state_dict["roi_head.mask_head.conv_logits.weight"].shape[1]
    if labels is not None and len(labels) != fields["num_classes"]:
        fields["labels"] = None
    return MaskRCNNConfig(backbone=backbone, **fields)


def model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: MaskRCNNConfig | None = None
) -> MaskRCNN:
    """A detector holding the canonical ``state_dict`` (architecture from the shapes when ``config`` is None)."""
    model = build_mask_rcnn(config or config_from_state_dict(state_dict))
    load_into(model, state_dict)
    return model.eval()


def _config_from_meta(checkpoint: Mapping[str, Any]) -> MaskRCNNConfig | None:
    """The MaskRCNNConfig a checkpoint written by swinkit keeps in ``meta['swinkit']``; None for other files."""
    meta = checkpoint.get("meta")
    saved = meta.get("swinkit") if isinstance(meta, Mapping) else None
    if not isinstance(saved, Mapping) or "config" not in saved:
        return None
    return MaskRCNNConfig.from_dict(dict(saved["config"]))


def canonical_from_mmdet(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout name, canonical state dict) of an mmdet 3.x or Swin-Transformer-Object-Detection state dict."""
    if mmdet.detect(state_dict):
        return mmdet.NAME, mmdet.to_canonical(state_dict)
    if mmdet.detect_official(state_dict):
        return mmdet.OFFICIAL_NAME, mmdet.official_to_canonical(state_dict)
    raise ValueError(
        "not an mmdetection two-stage detector with a Swin backbone: it needs rpn_head tensors and a backbone in "
        "the mmdet (backbone.stages.*) or official Swin (backbone.layers.*) layout"
    )


def load_mmdet(path: str | os.PathLike, config: MaskRCNNConfig | None = None) -> MaskRCNN:
    """A detector from an mmdetection checkpoint (3.x model zoo, or the official Swin detection repository's 2.x
    files); ``config`` None reads it from swinkit's meta, else from the shapes and the meta's class names."""
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not an mmdetection checkpoint")
    _, canonical = canonical_from_mmdet(unwrap(checkpoint))
    config = config or _config_from_meta(checkpoint)
    if config is None:
        config = config_from_state_dict(canonical, labels=classes_from_meta(checkpoint))
    return model_from_state_dict(canonical, config)


def detection_description(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config.json (as a dict) of a loaded PyTorch checkpoint file holding an mmdetection two-stage
    detector (3.x model zoo, or the official Swin detection repository's 2.x files), read from swinkit's meta
    or from the shapes and the meta's class names; None when the file holds no such detector."""
    try:
        _, canonical = canonical_from_mmdet(unwrap(checkpoint))
    except ValueError:
        return None
    config = _config_from_meta(checkpoint)
    if config is None:
        config = config_from_state_dict(canonical, labels=classes_from_meta(checkpoint))
    return config_to_json(config)


def to_mmdet_checkpoint(model: MaskRCNN) -> dict[str, Any]:
    """The ``{'state_dict', 'meta'}`` body mmdet 3.x writes (classes in ``meta['dataset_meta']``)."""
    meta = {
        "dataset_meta": {"classes": list(model.config.label_names)},
        "swinkit": {"config": model.config.to_dict()},
    }
    return {"state_dict": mmdet.from_canonical(model.state_dict()), "meta": meta}


def save_mmdet(model: MaskRCNN, path: str | os.PathLike) -> None:
    """Write ``model`` as an mmdetection 3.x checkpoint (torch.save format, atomic)."""
    save_torch(to_mmdet_checkpoint(model), path)


def description_metadata(config: MaskRCNNConfig, preprocessor: DetectionPreprocessor) -> dict[str, str]:
    """What makes ``model.safetensors`` load as exactly this detector (safetensors metadata, training state)."""
    return {
        DESCRIPTION_KEYS[0]: json.dumps(config_to_json(config)),
        DESCRIPTION_KEYS[1]: json.dumps(preprocessor.to_preprocessor_config()),
    }


def save_pretrained(
    model: MaskRCNN, directory: str | os.PathLike, preprocessor: DetectionPreprocessor | None = None
) -> Path:
    """Write ``model`` in swinkit's detector layout: config.json, model.safetensors, preprocessor_config.json."""
    directory = Path(directory)
    make_folder(directory, directory)
    preprocessor = preprocessor or DetectionPreprocessor.from_config(model.config)
    metadata = description_metadata(model.config, preprocessor)
    save_safetensors(model.state_dict(), directory / "model.safetensors", metadata)
    atomic_write_json(directory / "config.json", config_to_json(model.config))
    atomic_write_json(directory / PREPROCESSOR_FILE, preprocessor.to_preprocessor_config())
    return directory


def _embedded_config(weights: Path) -> dict[str, Any] | None:
    """The config.json a ``model.safetensors`` written by swinkit carries in its metadata, else None."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        value = (f.metadata() or {}).get(DESCRIPTION_KEYS[0])
    try:
        return json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        raise ValueError(f"{weights}: its {DESCRIPTION_KEYS[0]} entry is not valid JSON") from None


def load_pretrained(source: str | os.PathLike) -> MaskRCNN:
    """A detector from a folder :func:`save_pretrained` wrote, or from its ``model.safetensors`` alone (the
    file describes itself)."""
    source = Path(source)
    weights = source / "model.safetensors" if source.is_dir() else source
    config_file = source / "config.json" if source.is_dir() else None
    if not weights.is_file() or weights.suffix != ".safetensors":
        raise ValueError(f"{source} is not a saved swinkit detector: it needs a model.safetensors")
    if config_file is not None and config_file.is_file():
        config_dict = json.loads(config_file.read_text())
    else:
        config_dict = _embedded_config(weights)
    if config_dict is None:
        raise ValueError(f"{source} has no config.json and its weights carry no description")
    return model_from_state_dict(load_state_file(weights), config_from_json(config_dict))

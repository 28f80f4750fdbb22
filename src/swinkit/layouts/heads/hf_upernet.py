"""transformers' ``UperNetForSemanticSegmentation`` with a Swin backbone (read and write).

Names on disk: ``backbone.`` + a ``SwinBackbone`` (``embeddings.*``, ``encoder.layers.*``,
``hidden_states_norms.stage{i+1}``; mapped by :mod:`swinkit.layouts.hf`), and heads named as mmseg's but
with ``batch_norm`` for ``bn`` and ``classifier`` for ``conv_seg``:
``decode_head.psp_modules.{k}.1.{conv,batch_norm}``, ``bottleneck``, ``lateral_convs.{i}``, ``fpn_convs.{i}``,
``fpn_bottleneck``, ``decode_head.classifier``, ``auxiliary_head.convs.{n}``, ``auxiliary_head.classifier``.
transformers' ``SwinBackbone`` also owns ``swin.layernorm`` (SwinModel's final norm), which its forward never
uses: it is dropped on reading and left out on writing (transformers lists it as ignorable when missing).
transformers has no dropout in its heads (in eval mode the logits agree), its auxiliary head always reads
stage 2, and its loss averages over non-ignored pixels; the config read keeps mmseg's loss reduction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts import hf
from swinkit.models.segmentation.config import UperNetConfig

log = logging.getLogger(__name__)

NAME = "hf_upernet"

_HEAD_RULES = [  # (transformers, canonical) substrings
    (".batch_norm.", ".bn."),
    ("decode_head.classifier.", "decode_head.conv_seg."),
    ("auxiliary_head.classifier.", "auxiliary_head.conv_seg."),
]
_HF_AUX_INDEX = 2  # UperNetFCNHead always reads the third feature map
_STAGE_NORM = re.compile(r"^norm(\d+)\.")


def detect(state_dict: Mapping[str, Any]) -> float:
    """Confidence in [0, 1] that ``state_dict`` is a transformers UperNet with a Swin backbone."""
    head = any(k.startswith("decode_head.psp_modules.") and ".batch_norm." in k for k in state_dict)
    swin = any(k.startswith(("backbone.embeddings.", "backbone.swin.embeddings.")) for k in state_dict)
    return 1.0 if head and swin else 0.0


def _head_to_canonical(name: str) -> str:
    for source, target in _HEAD_RULES:
        name = name.replace(source, target)
    return name


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers names to the canonical UperNet names (``backbone.`` + canonical Swin backbone names)."""
    backbone = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {}
    for name, tensor in hf.to_canonical(backbone).items():
        if name.startswith("norm."):  # SwinModel's final layernorm: unused by SwinBackbone
            log.info("dropping transformers' unused backbone norm %s", name)
            continue
        out["backbone." + name] = tensor
    for name, tensor in state_dict.items():
        if not name.startswith("backbone."):
            out[_head_to_canonical(name)] = tensor
    return out


def from_canonical(state_dict: Mapping[str, torch.Tensor], config: UperNetConfig) -> dict[str, torch.Tensor]:
    """Canonical UperNet names to the names ``UperNetForSemanticSegmentation.from_pretrained`` reads."""
    trunk, out = {}, {}
    for name, tensor in state_dict.items():
        if not name.startswith("backbone."):
            head = name
            for target, source in _HEAD_RULES:
                head = head.replace(source, target)
            out[head] = tensor
        elif m := _STAGE_NORM.match(name[len("backbone.") :]):
            rest = name[len("backbone.") + m.end() :]
            out[f"backbone.hidden_states_norms.stage{int(m.group(1)) + 1}.{rest}"] = tensor
        else:
            trunk[name[len("backbone.") :]] = tensor
    for name, tensor in hf.from_canonical(trunk, config.backbone).items():
        out["backbone." + name.removeprefix("swin.")] = tensor
    return out


def config_to_hf(config: UperNetConfig) -> dict[str, Any]:
    """A transformers ``config.json`` dict for ``UperNetForSemanticSegmentation`` with a ``SwinBackbone``."""
    if config.use_auxiliary_head and config.aux_in_index != _HF_AUX_INDEX:
        raise ValueError(
            f"transformers' UperNet auxiliary head reads stage {_HF_AUX_INDEX}; this model's reads {config.aux_in_index}"
        )
    if not config.backbone.patch_norm:
        raise ValueError(
            "transformers' Swin always normalises the patch embedding; this backbone has no patch norm"
        )
    backbone = hf.trunk_to_hf(config.backbone)
    stages = [f"stage{i + 1}" for i in range(config.backbone.num_stages)]
    backbone.update(out_features=stages, out_indices=list(range(1, len(stages) + 1)))
    backbone["stage_names"] = ["stem", *stages]
    labels = config.label_names
    return {
        "architectures": ["UperNetForSemanticSegmentation"],
        "model_type": "upernet",
        "backbone_config": backbone,
        "hidden_size": config.channels,
        "pool_scales": list(config.pool_scales),
        "use_auxiliary_head": config.use_auxiliary_head,
        "auxiliary_loss_weight": config.aux_weight,
        "auxiliary_in_channels": config.backbone.stage_dims[config.aux_in_index],
        "auxiliary_channels": config.aux_channels,
        "auxiliary_num_convs": config.aux_num_convs,
        "auxiliary_concat_input": config.aux_concat_input,
        "loss_ignore_index": config.ignore_index,
        "initializer_range": 0.02,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def config_from_hf(data: Mapping[str, Any]) -> UperNetConfig:
    """An UperNetConfig from a transformers UperNet ``config.json`` whose backbone is Swin v1."""
    if data.get("model_type") != "upernet":
        raise ValueError(f"config.json has model_type {data.get('model_type')!r}; expected 'upernet'")
    backbone_data = dict(data.get("backbone_config") or {})
    if backbone_data.get("model_type") != "swin":
        raise ValueError(
            f"UperNet backbone is {backbone_data.get('model_type')!r}; swinkit reads Swin ('swin')"
        )
    backbone = hf.trunk_from_hf(backbone_data)
    stages = backbone_data.get("out_indices") or list(range(1, backbone.num_stages + 1))
    if list(stages) != list(range(1, backbone.num_stages + 1)):
        raise ValueError(
            f"UperNet needs every Swin stage as a feature map, config.json has out_indices {stages}"
        )
    id2label = data.get("id2label") or {}
    labels = tuple(id2label[str(i)] for i in range(len(id2label)))
    if labels == tuple(f"LABEL_{i}" for i in range(len(labels))):
        labels = None
    return UperNetConfig(
        backbone=backbone,
        num_classes=len(id2label),
        channels=data.get("hidden_size", 512),
        pool_scales=tuple(data.get("pool_scales", (1, 2, 3, 6))),
        use_auxiliary_head=data.get("use_auxiliary_head", True),
        aux_channels=data.get("auxiliary_channels", 256),
        aux_in_index=_HF_AUX_INDEX,
        aux_num_convs=data.get("auxiliary_num_convs", 1),
        aux_concat_input=data.get("auxiliary_concat_input", False),
        aux_weight=data.get("auxiliary_loss_weight", 0.4),
        ignore_index=data.get("loss_ignore_index", 255),
        labels=labels,
    )

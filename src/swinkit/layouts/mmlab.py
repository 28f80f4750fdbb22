"""OpenMMLab layouts: mmsegmentation, mmdetection and mmpretrain (mmcls) Swin v1, mmpretrain Swin v2.

Followed: mmsegmentation ``mmseg/models/backbones/swin.py`` and ``tools/model_converters/swin2mmseg.py``
(088894bd), mmdetection ``mmdet/models/backbones/swin.py`` with ``swin_converter`` (09269cfe), mmpretrain
``mmpretrain/models/backbones/swin_transformer.py`` and ``swin_transformer_v2.py`` (0979e785),
``models/utils/embed.py`` (``PatchMerging(use_post_norm)``) and ``models/utils/attention.py``
(``ShiftWindowMSA``/``WindowMSAV2``), and mmcv's ``FFN`` and ``PatchMerging``.

Names: ``patch_embed.projection``, ``stages.{i}.blocks.{j}.attn.w_msa.*``, ``ffn.layers.0.0`` (fc1),
``ffn.layers.1`` (fc2), per-output norms ``norm{i}``; whole-model files prefix the backbone with
``backbone.`` (detector/segmentor heads are ignored, an mmpretrain classifier's ``head.fc`` is the head).
mmseg/mmdet/mmpretrain v1 merge at the end of stage i (``stages.{i}.downsample``); mmpretrain v2 merges at
the start of stage i+1 (``stages.{i+1}.downsample``) and normalises after the reduction.

PatchMerging uses ``nn.Unfold(kernel_size=2, stride=2)``, whose output channel ``c*4 + k`` enumerates
kernel positions k = (0,0), (0,1), (1,0), (1,1) inside each channel; the official concatenation is
position-major (``k*C + c``) over (0,0), (1,0), (0,1), (1,1). Reduction columns (and the v1 4C norm) are
permuted back: the inverse of the converters' ``correct_unfold_*_order``.

An mmpretrain classifier normalises the last stage with ``norm{last}`` before its head: that norm becomes
canonical ``norm``. Backbone files keep their ``norm{i}`` (the canonical backbone's output norms).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts.common import DROPPED_BUFFERS, pretrained_windows_hint, rename, window_from_index

log = logging.getLogger(__name__)

NAME = "mmlab"

# kernel position of official slot k' in nn.Unfold order (self-inverse)
_UNFOLD_ORDER = [0, 2, 1, 3]
_MERGE = re.compile(r"stages\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$")
_RULES = [
    (r"patch_embed\.projection\.", "patch_embed.proj."),
    (r"stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.", r"layers.\1.blocks.\2.attn."),
    (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.", r"layers.\1.blocks.\2.mlp.fc1."),
    (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.", r"layers.\1.blocks.\2.mlp.fc2."),
    (r"stages\.(\d+)\.blocks\.", r"layers.\1.blocks."),
    (r"head\.fc\.", "head."),
]
_MARKER = "stages.0.blocks.0.attn.w_msa."
_BACKBONE_ROOTS = ("patch_embed.", "stages.", "absolute_pos_embed", "norm")


def _backbone_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone (prefix ``backbone.`` removed) and classifier head; other model parts are dropped."""
    if not any(k.startswith("backbone.") for k in state_dict):
        return dict(state_dict)
    kept = {k[len("backbone.") :] if k.startswith("backbone.") else k: v for k, v in state_dict.items()}
    dropped = sorted({k.split(".")[0] for k in kept if not k.startswith(("head.fc.", *_BACKBONE_ROOTS))})
    if dropped:
        log.info("ignoring non-backbone parts of the checkpoint: %s", ", ".join(dropped))
    return {k: v for k, v in kept.items() if k.startswith(("head.fc.", *_BACKBONE_ROOTS))}


def detect(state_dict: Mapping[str, Any]) -> float:
    return 1.0 if any(k.startswith((_MARKER, "backbone." + _MARKER)) for k in state_dict) else 0.0


def window_size_hint(state_dict: Mapping[str, Any]) -> int | None:
    """The stage-1 window, from the persistent relative position index of the first block."""
    for prefix in ("", "backbone."):
        index = state_dict.get(prefix + _MARKER + "relative_position_index")
        if index is not None:
            return window_from_index(index)
    return None


def pretrained_window_sizes_hint(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None:
    """mmpretrain v2: each stage's pretrained window, from the persistent coordinate tables."""
    pattern = r"(?:backbone\.)?stages\.(\d+)\.blocks\.0\.attn\.w_msa\.relative_coords_table"
    return pretrained_windows_hint(state_dict, pattern)


def unfold_to_official(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder the last dimension (4C, nn.Unfold channel order) into the official 2x2 concatenation order."""
    *lead, four_c = tensor.shape
    grouped = tensor.reshape(*lead, four_c // 4, 4)[..., _UNFOLD_ORDER]  # (..., C, k') in official slot order
    return grouped.transpose(-1, -2).reshape(*lead, four_c)  # (..., k'*C + c)


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenMMLab names to canonical names, PatchMerging weights permuted to the official order."""
    sd = {k: v for k, v in _backbone_keys(state_dict).items() if not DROPPED_BUFFERS.search(k)}
    merges = sorted({int(m.group(1)) for k in sd if (m := _MERGE.match(k))})
    merge_at_start = bool(merges) and merges[0] > 0  # mmpretrain v2
    last_stage = max(int(m.group(1)) for k in sd if (m := re.match(r"stages\.(\d+)\.", k)))
    classifier = "head.fc.weight" in sd
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        if m := _MERGE.match(name):
            stage, part, kind = int(m.group(1)), m.group(2), m.group(3)
            unfolded = sd[f"stages.{stage}.downsample.reduction.weight"].shape[1]  # 4C, the Unfold width
            if tensor.shape[-1] == unfolded:  # reduction columns, and the v1 norm (before the reduction)
                tensor = unfold_to_official(tensor)
            out[f"layers.{stage - 1 if merge_at_start else stage}.downsample.{part}.{kind}"] = tensor
        elif name == "absolute_pos_embed" and tensor.ndim == 4:  # (1, C, H, W) in some mmseg versions
            out[name] = tensor.flatten(2).transpose(1, 2)  # (1, H*W, C)
        elif classifier and name.startswith(f"norm{last_stage}."):
            out["norm." + name.split(".", 1)[1]] = tensor
        else:
            out[rename(name, _RULES)] = tensor
    return out

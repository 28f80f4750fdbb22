"""Checkpoint layouts of whole task models (backbone + heads): one module per foreign layout.

Each module has ``NAME``, ``detect(state_dict) -> confidence``, ``to_canonical(state_dict)`` and
``from_canonical(state_dict, config)``; the backbone part is mapped by calling the trunk layouts
(:mod:`swinkit.layouts.hf`, :mod:`swinkit.layouts.mmlab`). Layouts: ``mmseg`` (mmsegmentation segmentors),
``hf_upernet`` (transformers' UperNetForSemanticSegmentation). ``detect_head_layout`` picks one for a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from swinkit.layouts.heads import hf_upernet, mmseg

HEAD_LAYOUTS: dict[str, ModuleType] = {m.NAME: m for m in (mmseg, hf_upernet)}


def detect_head_layout(state_dict: Mapping[str, Any]) -> str | None:
    """The name of the whole-model layout ``state_dict`` is in, or None when it is no task model's."""
    scores = {name: module.detect(state_dict) for name, module in HEAD_LAYOUTS.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] > 0 else None

"""swinkit: Swin Transformer v1/v2 models, checkpoint layouts, fine-tuning, evaluation and serving.

The names below are imported on first use, so ``import swinkit.data.decode`` (a server's or a data loader's
worker) does not load the model stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Preprocessing": "swinkit.presets",
    "SwinConfig": "swinkit.presets",
    "get_preset": "swinkit.presets",
    "list_models": "swinkit.presets",
    "ClassifierConfig": "swinkit.models.swin",
    "SwinBackbone": "swinkit.models.swin",
    "SwinTransformer": "swinkit.models.swin",
    "build_model": "swinkit.models.factory",
    "create_model": "swinkit.models.factory",
    "from_pretrained": "swinkit.loading",
    "load_checkpoint": "swinkit.loading",
    "save_pretrained": "swinkit.loading",
}
__all__ = [
    "ClassifierConfig",
    "Preprocessing",
    "SwinBackbone",
    "SwinConfig",
    "SwinTransformer",
    "build_model",
    "create_model",
    "from_pretrained",
    "get_preset",
    "list_models",
    "load_checkpoint",
    "save_pretrained",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from swinkit.loading import from_pretrained, load_checkpoint, save_pretrained
    from swinkit.models.factory import build_model, create_model
    from swinkit.models.swin import ClassifierConfig, SwinBackbone, SwinTransformer
    from swinkit.presets import Preprocessing, SwinConfig, get_preset, list_models


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'swinkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

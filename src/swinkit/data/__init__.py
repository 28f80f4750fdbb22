"""Reading images: decoding files into RGB (``decode``) and the checkpoint's preprocessing (``preprocess``).

Imported on first use: ``swinkit.data.decode`` needs only Pillow and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEFAULT_MAX_PIXELS": "swinkit.data.decode",
    "ImageDecodeError": "swinkit.data.decode",
    "decode_image": "swinkit.data.decode",
    "ImageProcessor": "swinkit.data.preprocess",
    "preprocessing_for": "swinkit.data.preprocess",
    "processor_for_checkpoint": "swinkit.data.preprocess",
}
__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "ImageProcessor",
    "decode_image",
    "preprocessing_for",
    "processor_for_checkpoint",
]

if TYPE_CHECKING:
    from swinkit.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
    from swinkit.data.preprocess import ImageProcessor, preprocessing_for, processor_for_checkpoint


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'swinkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

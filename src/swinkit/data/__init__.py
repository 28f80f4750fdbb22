"""Reading images: decoding files into RGB (``decode``) and the checkpoint's preprocessing (``preprocess``)."""

from swinkit.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from swinkit.data.preprocess import ImageProcessor, processor_for_checkpoint

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "ImageProcessor",
    "decode_image",
    "processor_for_checkpoint",
]

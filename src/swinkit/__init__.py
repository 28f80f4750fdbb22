"""swinkit: Swin Transformer v1/v2 models, checkpoint layouts, fine-tuning, evaluation and serving."""

from swinkit.loading import from_pretrained, load_checkpoint, save_pretrained
from swinkit.models.factory import build_model, create_model
from swinkit.models.swin import SwinBackbone, SwinTransformer
from swinkit.presets import Preprocessing, SwinConfig, get_preset, list_models

__all__ = [
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

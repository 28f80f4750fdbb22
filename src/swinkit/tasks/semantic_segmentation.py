"""Semantic segmentation with UPerNet + Swin, trained and evaluated as mmsegmentation 1.x does.

Data: ``swinkit.data.segmentation`` (ADE20K tree, image/mask folders, JSONL). Training: mmseg's ADE20K
pipeline (random resize, crop with ``cat_max_ratio``, flip, photometric distortion, padding) and the model's
losses (cross entropy with ignore index + 0.4 auxiliary). Evaluation: mmseg's ``IoUMetric`` on predictions
resized back to each image's original size. Export: transformers' ``UperNetForSemanticSegmentation`` folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from swinkit.checkpoint_io import atomic_write_json
from swinkit.data.segmentation import SegmentationProcessor
from swinkit.layouts.heads import hf_upernet
from swinkit.loading import DESCRIPTION_KEYS, PREPROCESSOR_FILE
from swinkit.models.segmentation.checkpoints import save_hf
from swinkit.models.segmentation.config import SEGMENTATION_PRESETS
from swinkit.models.segmentation.upernet import UperNet
from swinkit.tasks.base import Task, TaskPredictor

UPERNET_ARCHITECTURE = "UperNetForSemanticSegmentation"


def upernet_description(model: UperNet, processor: SegmentationProcessor) -> dict[str, str]:
    """The transformers config.json of the UperNet and its preprocessing, as JSON strings (what makes a
    checkpoint file load as exactly this model)."""
    return {
        DESCRIPTION_KEYS[0]: json.dumps(hf_upernet.config_to_hf(model.config)),
        DESCRIPTION_KEYS[1]: json.dumps(processor.to_preprocessor_config()),
    }


def export_upernet(model: UperNet, directory: str | os.PathLike, processor: SegmentationProcessor) -> None:
    """transformers' UperNet folder (config.json, model.safetensors carrying swinkit's description) and
    preprocessor_config.json, which transformers' AutoImageProcessor and ``swinkit predict`` read."""
    save_hf(model, directory, metadata=upernet_description(model, processor))
    atomic_write_json(Path(directory) / PREPROCESSOR_FILE, processor.to_preprocessor_config())


class SemanticSegmentationTask(Task):
    """Per-pixel classification of images into the classes of the data; primary metric mIoU."""

    name = "semantic_segmentation"
    higher_is_better = True
    primary_metric = "mIoU"

    @classmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        return UPERNET_ARCHITECTURE in (config_dict.get("architectures") or [])

    @classmethod
    def check_preset(cls, name: str) -> None:
        """A segmentation preset (``upernet_swin_tiny_patch4_window7_224_1k_ade20k_512``, ``upernet_swin_micro``...)."""
        if name not in SEGMENTATION_PRESETS:
            import difflib

            close = difflib.get_close_matches(name, SEGMENTATION_PRESETS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown preset {name!r} for semantic segmentation{hint} (see `swinkit models`: the upernet_* presets)"
            )

    def description(self, model: nn.Module, processor: Any) -> dict[str, str]:
        return upernet_description(model, processor)

    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        export_upernet(model, directory, processor)

    @classmethod
    def predictor(
        cls,
        source: str | os.PathLike,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> TaskPredictor:
        """The segmentation predictor of a saved UperNet (``swinkit.tasks.segmentation_predict``)."""
        from swinkit.tasks.segmentation_predict import segmentation_predictor

        return segmentation_predictor(
            source, device=device, batch_size=batch_size, top_k=top_k, threshold=threshold
        )

"""Building models from presets or configs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swinkit.models.swin import SwinBackbone, SwinTransformer
from swinkit.presets import SwinConfig, get_preset


def build_model(
    config: SwinConfig,
    *,
    backbone: bool = False,
    out_indices: Sequence[int] | None = None,
    out_norms: bool = True,
) -> SwinTransformer | SwinBackbone:
    """A randomly initialised classifier (or backbone, see :class:`SwinBackbone`) for ``config``."""
    model = SwinBackbone(config, out_indices, out_norms=out_norms) if backbone else SwinTransformer(config)
    model.init_weights()
    return model


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    backbone: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides: Any,
) -> SwinTransformer | SwinBackbone:
    """A randomly initialised model of preset ``name``.

    ``num_classes``/``labels`` set the head; ``overrides`` change any SwinConfig field (e.g. ``image_size``,
    ``drop_path_rate``). With ``backbone=True`` the model returns NCHW maps of the stages in ``out_indices``.
    """
    config = get_preset(name).config
    changes = dict(overrides)
    if labels is not None:
        changes["labels"] = tuple(labels)
        if num_classes is not None and num_classes != len(labels):
            raise ValueError(f"num_classes={num_classes} but {len(labels)} labels were given")
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if backbone:
        changes["num_classes"] = 0
        changes["labels"] = None
    return build_model(config.replace(**changes), backbone=backbone, out_indices=out_indices)

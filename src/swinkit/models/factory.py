"""Building models from presets or configs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swinkit.models.swin import ClassifierConfig, SwinBackbone, SwinTransformer
from swinkit.presets import SwinConfig, get_preset


def build_model(
    config: ClassifierConfig | SwinConfig,
    *,
    backbone: bool = False,
    out_indices: Sequence[int] | None = None,
    out_norms: bool = True,
) -> SwinTransformer | SwinBackbone:
    """A randomly initialised classifier of a ClassifierConfig, or with ``backbone=True`` the backbone (see
    :class:`SwinBackbone`) of a trunk's SwinConfig (or of a ClassifierConfig's trunk)."""
    if backbone:
        trunk = config.trunk if isinstance(config, ClassifierConfig) else config
        model = SwinBackbone(trunk, out_indices, out_norms=out_norms)
    else:
        model = SwinTransformer(config)
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

    ``num_classes``/``labels`` set the head (default: the preset's classes); ``overrides`` change any
    SwinConfig field (e.g. ``image_size``, ``drop_path_rate``). With ``backbone=True`` the model returns NCHW
    maps of the stages in ``out_indices``.
    """
    preset = get_preset(name)
    trunk = preset.config.replace(**overrides)
    if backbone:
        return build_model(trunk, backbone=True, out_indices=out_indices)
    if labels is not None and num_classes is not None and num_classes != len(labels):
        raise ValueError(f"num_classes={num_classes} but {len(labels)} labels were given")
    classes = (
        len(labels) if labels is not None else preset.num_classes if num_classes is None else num_classes
    )
    head = ClassifierConfig(trunk, num_classes=classes, labels=tuple(labels) if labels is not None else None)
    return build_model(head)

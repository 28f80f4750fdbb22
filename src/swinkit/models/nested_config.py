"""What the configs of a head on a Swin trunk share (``UperNetConfig``, ``MaskRCNNConfig``): a frozen dataclass
with a nested ``backbone: SwinConfig``, tuple fields, and ``labels`` that fix ``num_classes``.

The dict form is JSON's: the backbone as ``SwinConfig.to_dict()``, every tuple as a list, fields in their
declared order (the saved config.json files depend on that order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from swinkit.presets import SwinConfig

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """``config``'s fields in declared order: the backbone as its own dict, tuples as lists."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "backbone":
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def config_from_dict(
    cls: type[C],
    data: dict[str, Any],
    backbone_from_dict: Callable[[dict[str, Any]], SwinConfig] = SwinConfig.from_dict,
) -> C:
    """``cls`` from :func:`config_to_dict`'s mapping (lists back to tuples); unknown fields are refused."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    values["backbone"] = backbone_from_dict(dict(data["backbone"]))
    return cls(**values)


def replace_labelled(config: C, changes: dict[str, Any]) -> C:
    """A copy of ``config`` with ``changes`` (validated again): new ``labels`` set ``num_classes``, a new
    ``num_classes`` drops the old labels, and sequences given for tuple fields become tuples."""
    changes = dict(changes)
    if changes.get("labels") is not None:
        changes["labels"] = tuple(changes["labels"])
        changes.setdefault("num_classes", len(changes["labels"]))
    elif "num_classes" in changes and changes["num_classes"] != config.num_classes:
        changes.setdefault("labels", None)
    tuples = {k for k in changes if k != "labels" and isinstance(getattr(config, k, None), tuple)}
    return dataclasses.replace(config, **{k: tuple(v) if k in tuples else v for k, v in changes.items()})


def label_names(labels: tuple[str, ...] | None, num_classes: int) -> tuple[str, ...]:
    """The class names, ``LABEL_{i}`` (transformers' default) where none were given."""
    return labels if labels is not None else tuple(f"LABEL_{i}" for i in range(num_classes))

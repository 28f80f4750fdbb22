"""Loading any checkpoint people hold into the canonical model, and saving in the Hugging Face layout.

Where a checkpoint comes from (hub, folder, shards, file) and what describes it is ``swinkit.sources``;
this module turns what it reads into canonical tensors and a model, fitting position tables on the way.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swinkit import layouts
from swinkit.checkpoint_io import atomic_write_json, load_state_file, make_folder, save_safetensors
from swinkit.data.preprocess import preprocessing_for, preprocessor_config
from swinkit.layouts import hf
from swinkit.layouts.common import infer_config
from swinkit.models.factory import build_model
from swinkit.models.swin import ClassifierConfig, SwinBackbone, SwinTransformer
from swinkit.presets import Preprocessing, SwinConfig, get_preset

# the names below lived here before swinkit.sources; ``from swinkit.loading import ...`` keeps working
from swinkit.sources import (
    DESCRIPTION_KEYS,
    PREPROCESSOR_FILE,
    checkpoint_description,
    description_metadata,
    folder_weights,
    read_description,
    resolve_source,
)

__all__ = [
    "DESCRIPTION_KEYS",
    "PREPROCESSOR_FILE",
    "Checkpoint",
    "CheckpointMismatchError",
    "adapt_state_dict",
    "describe_source",
    "description_metadata",
    "from_pretrained",
    "head_classes",
    "load_checkpoint",
    "load_into",
    "model_from_checkpoint",
    "read_description",
    "resolve_source",
    "save_pretrained",
]

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model: lists missing, unexpected and mis-shaped keys."""

    def __init__(self, missing: Sequence[str], unexpected: Sequence[str], mis_shaped: Sequence[str]) -> None:
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)
        lines = ["checkpoint does not match the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                lines.append(f"  {title}: {shown}")
        super().__init__("\n".join(lines))


@dataclass
class Checkpoint:
    """A checkpoint read into the canonical layout."""

    config: ClassifierConfig  # the trunk, and the head the checkpoint has (0 classes: none)
    state_dict: dict[str, torch.Tensor]
    layout: str  # the layout the tensors came in
    preprocessing: dict[str, Any] | None = None  # the HF preprocessor_config.json, when there was one
    path: Path | None = None  # the file or folder it was read from

    @property
    def trunk(self) -> SwinConfig:
        return self.config.trunk


def load_checkpoint(
    source: str | os.PathLike, *, layout: str | None = None, preset: str | None = None
) -> Checkpoint:
    """Read ``source`` into the canonical layout, with its architecture.

    The architecture comes from the folder's config.json, else from ``preset`` (the checkpoint's tensors
    must then fit it), else from the tensor shapes.
    """
    path = resolve_source(source)
    weights, loaded = folder_weights(path) if path.is_dir() else (path, load_state_file(path))
    hf_config, preprocessing = checkpoint_description(path, weights, loaded)
    raw = layouts.unwrap(_training_weights(loaded))
    layout, state_dict = layouts.to_canonical(raw, layout)
    described = hf_config is not None and hf_config.get("model_type") in ("swin", "swinv2")
    if described:
        config = hf.config_from_hf(hf_config)
        if config.num_classes == 0 and "head.weight" in state_dict:
            config = config.replace(num_classes=head_classes(state_dict))
    elif preset:
        config = ClassifierConfig(get_preset(preset).config, num_classes=head_classes(state_dict))
    else:
        module = layouts.LAYOUTS[layout]
        window = getattr(module, "window_size_hint", lambda sd: None)(raw)
        pretrained = getattr(module, "pretrained_window_sizes_hint", lambda sd: None)(raw)
        trunk = infer_config(state_dict, window_size=window, pretrained_window_sizes=pretrained)
        config = ClassifierConfig(trunk, num_classes=head_classes(state_dict))
        if trunk.version == 2 and window is None:
            log.warning(
                "%s files do not record the Swin v2 window size: assuming %d (image %d); pass a preset if "
                "the model used another",
                layout,
                trunk.window_size,
                trunk.image_size,
            )
    if not described:  # a layout's own run-time rules (torchvision's); a config.json records them itself
        rules = getattr(layouts.LAYOUTS[layout], "CONFIG_FIELDS", {})
        config = config.replace(trunk=config.trunk.replace(**rules))
    return Checkpoint(config, state_dict, layout, preprocessing, path)


def head_classes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """The classes of a canonical state dict's classifier head (0 without one)."""
    head = state_dict.get("head.weight")
    return head.shape[0] if head is not None else 0


def describe_source(source: str | os.PathLike, config: SwinConfig) -> Checkpoint:
    """``source`` as a headless Checkpoint of the trunk ``config`` without tensors, carrying its own
    preprocessor config, for ``preprocessing_for``."""
    path, _, preprocessing = read_description(source)
    return Checkpoint(ClassifierConfig(config, num_classes=0), {}, "description", preprocessing, path)


def _training_weights(loaded: dict[str, Any]) -> dict[str, Any]:
    """The weights a training state (``last.pt``) evaluates with: its EMA when the run kept one."""
    training_state = "progress" in loaded and "optimizer" in loaded
    ema = loaded.get("ema") if training_state else None
    if isinstance(ema, Mapping) and isinstance(ema.get("weights"), Mapping):
        return dict(ema["weights"])
    return loaded


def _resize_v1_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a (L, nH) relative position bias table to (size*size, nH), as the official fine-tuning."""
    old = round(table.shape[0] ** 0.5)
    grid = table.T.reshape(1, -1, old, old).float()  # (1, nH, 2ws-1, 2ws-1)
    grid = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return grid.reshape(-1, size * size).T.to(table.dtype)


def _resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    old = round(pos.shape[1] ** 0.5)
    x = pos.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()  # (1, C, g, g)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)


def adapt_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resize position tables/embeddings to the model's windows and grid (window and resolution transfer)."""
    target = model.state_dict()
    out = dict(state_dict)
    for name, tensor in state_dict.items():
        want = target.get(name)
        if want is None or want.shape == tensor.shape:
            continue
        if name.endswith("relative_position_bias_table") and tensor.shape[1] == want.shape[1]:
            out[name] = _resize_v1_table(tensor, round(want.shape[0] ** 0.5))
            log.info("resized %s from %s to %s", name, tuple(tensor.shape), tuple(want.shape))
        elif name == "absolute_pos_embed" and tensor.shape[2] == want.shape[2]:
            out[name] = _resize_pos_embed(tensor, round(want.shape[1] ** 0.5))
            log.info("resized %s from %s to %s", name, tuple(tensor.shape), tuple(want.shape))
    return out


def load_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, allow_missing: Sequence[str] = ()
) -> None:
    """Copy a canonical state dict into ``model`` exactly; CheckpointMismatchError on any mismatch.

    ``allow_missing`` lists name prefixes the checkpoint may lack (they keep their initialisation).
    """
    state_dict = adapt_state_dict(state_dict, model)
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in state_dict if k not in target]
    mis_shaped = [
        f"{k} {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state_dict.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatchError(missing, unexpected, mis_shaped)
    model.load_state_dict(state_dict, strict=False)


def from_pretrained(
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    backbone: bool = False,
    out_indices: Sequence[int] | None = None,
    layout: str | None = None,
    preset: str | None = None,
    out_norms: bool | None = None,
    **overrides: Any,
) -> SwinTransformer | SwinBackbone:
    """A model with the weights of ``source`` (hub id, HF folder, checkpoint file in any layout, preset name).

    ``num_classes``/``labels`` different from the checkpoint's give a fresh head (logged); ``backbone=True``
    returns the multi-scale backbone (``out_norms`` None: per-stage output norms unless the checkpoint is a
    backbone saved without them, like transformers' ``Swinv2Backbone``; norms the checkpoint lacks start
    as LayerNorm(1, 0), the last one from the classifier's final norm); ``overrides``
    change config fields such as ``image_size`` or ``window_size`` (position tables are resized).
    """
    ckpt = load_checkpoint(source, layout=layout, preset=preset)
    return model_from_checkpoint(
        ckpt,
        num_classes=num_classes,
        labels=labels,
        backbone=backbone,
        out_indices=out_indices,
        out_norms=out_norms,
        **overrides,
    )


def model_from_checkpoint(
    ckpt: Checkpoint,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    backbone: bool = False,
    out_indices: Sequence[int] | None = None,
    out_norms: bool | None = None,
    **overrides: Any,
) -> SwinTransformer | SwinBackbone:
    """The model of an already-read checkpoint; arguments as :func:`from_pretrained`."""
    config = ckpt.config.replace(trunk=_transferred(ckpt.config.trunk, overrides))
    state_dict = dict(ckpt.state_dict)
    if backbone:
        return _backbone_from(config.trunk, state_dict, out_indices, out_norms)
    state_dict.pop("mask_token", None)
    state_dict = _classifier_norm(state_dict, config.trunk.num_stages)
    new_config, fresh_head = _head_change(config, num_classes, labels)
    if fresh_head:
        log.warning(
            "the checkpoint's head has %d classes; a fresh head with %d classes is initialised",
            config.num_classes,
            new_config.num_classes,
        )
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    model = build_model(new_config)
    load_into(model, state_dict, allow_missing=["head."] if fresh_head else ())
    return model


def _transferred(config: SwinConfig, overrides: Mapping[str, Any]) -> SwinConfig:
    """``config`` with ``overrides``; a v2 model moved to other stage windows keeps normalising its
    coordinates by the windows it was trained at, as the official fine-tunes do (12 -> 16/24 sets
    ``pretrained_window_sizes`` to (12, 12, 12, 6)), unless the overrides set them."""
    new = config.replace(**overrides) if overrides else config
    if new.version != 2 or "pretrained_window_sizes" in overrides:
        return new
    if new.stage_window_sizes == config.stage_window_sizes:
        return new
    trained = config.stage_window_sizes
    # a window of 1 had no coordinates to normalise: nothing to keep
    kept = tuple(p or (w if w > 1 else 0) for p, w in zip(config.pretrained_window_sizes, trained))
    log.info("v2 windows %s -> %s: pretrained_window_sizes %s", trained, new.stage_window_sizes, kept)
    return new.replace(pretrained_window_sizes=kept)


def _backbone_from(
    config: SwinConfig,
    state_dict: dict[str, torch.Tensor],
    out_indices: Sequence[int],
    out_norms: bool | None,
) -> SwinBackbone:
    """A backbone from canonical weights; the classifier's final norm serves as the last output norm."""
    stage_norm = re.compile(r"norm\d+\.")
    if out_norms is None:
        out_norms = "norm.weight" in state_dict or any(stage_norm.match(k) for k in state_dict)
    model = build_model(config, backbone=True, out_indices=out_indices, out_norms=out_norms)
    weights = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "norm.", "mask_token"))}
    kept_norms = tuple(f"norm{i}." for i in model.out_indices) if out_norms else ()
    weights = {k: v for k, v in weights.items() if not stage_norm.match(k) or k.startswith(kept_norms)}
    last = f"norm{config.num_stages - 1}"
    if out_norms and config.num_stages - 1 in model.out_indices and "norm.weight" in state_dict:
        weights.setdefault(f"{last}.weight", state_dict["norm.weight"])
        weights.setdefault(f"{last}.bias", state_dict["norm.bias"])
    load_into(model, weights, allow_missing=[f"norm{i}." for i in model.out_indices])
    return model


def _classifier_norm(state_dict: dict[str, torch.Tensor], num_stages: int) -> dict[str, torch.Tensor]:
    """Per-stage output norms (``norm{i}``) made fit for a classifier, which has only a final ``norm``.

    A backbone checkpoint's last output norm becomes the final norm (it sits exactly where the classifier
    normalises before pooling); the other output norms have no place in a classifier and are dropped.
    """
    last = f"norm{num_stages - 1}."
    promote = "norm.weight" not in state_dict
    stage_norm = re.compile(r"norm\d+\.")
    out, dropped = {}, set()
    for key, value in state_dict.items():
        if promote and key.startswith(last):
            out["norm." + key[len(last) :]] = value
        elif stage_norm.match(key):
            dropped.add(key.split(".")[0])
        else:
            out[key] = value
    if dropped:
        log.info("a classifier has no per-stage output norms: dropping %s", ", ".join(sorted(dropped)))
    return out


def _head_change(
    config: ClassifierConfig, num_classes: int | None, labels: Sequence[str] | None
) -> tuple[ClassifierConfig, bool]:
    """(config with the requested head, whether that head must be freshly initialised)."""
    if labels is not None:
        labels = tuple(labels)
        if num_classes is not None and num_classes != len(labels):
            raise ValueError(f"num_classes={num_classes} but {len(labels)} labels were given")
        if labels == config.labels:
            return config, False
        if len(labels) == config.num_classes and config.labels is None:
            return config.replace(labels=labels), False  # names for the checkpoint's unnamed classes
        return config.replace(num_classes=len(labels), labels=labels), True
    if num_classes is not None and num_classes != config.num_classes:
        return config.replace(num_classes=num_classes, labels=None), True
    return config, False


def save_pretrained(
    model: SwinTransformer,
    directory: str | os.PathLike,
    *,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` in the Hugging Face layout (config.json, model.safetensors, preprocessor_config.json).

    transformers' ``AutoModelForImageClassification.from_pretrained(directory)`` and
    ``AutoImageProcessor.from_pretrained(directory)`` read the result; ``preprocessing`` None writes the
    model's default evaluation preprocessing (``swinkit.data.preprocess.preprocessing_for``).
    """
    if isinstance(model, SwinBackbone):
        raise ValueError(
            "save_pretrained writes classifiers; a backbone has no Hugging Face classification layout"
        )
    directory = Path(directory)
    make_folder(directory, directory)
    config, trunk = model.config, model.config.trunk
    if not hf.transformers_can_run(trunk):
        log.warning(
            "transformers cannot run this architecture (stage windows %s for window_size %d, patch_norm=%s): "
            "swinkit reads this folder, transformers' Swin does not",
            trunk.stage_window_sizes,
            trunk.window_size,
            trunk.patch_norm,
        )
    if preprocessing is None:
        preprocessing = preprocessing_for(trunk).to_preprocessor_config()
    data = preprocessing if isinstance(preprocessing, dict) else preprocessor_config(preprocessing)
    tensors = hf.from_canonical(model.state_dict(), trunk)
    save_safetensors(tensors, directory / "model.safetensors", description_metadata(config, data))
    atomic_write_json(directory / "config.json", hf.config_to_hf(config))
    atomic_write_json(directory / PREPROCESSOR_FILE, data)
    return directory

"""Loading any checkpoint people hold into the canonical model, and saving in the Hugging Face layout.

A *source* is a Hugging Face hub id, a directory (HF layout: config.json + weights), a checkpoint file in
any layout ``swinkit.layouts`` knows, or a preset name whose hub id is used.
"""

from __future__ import annotations

import json
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
from swinkit.presets import PRESETS, Preprocessing, SwinConfig, get_preset

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSOR_FILE = "preprocessor_config.json"
# where a checkpoint file carries its own description (safetensors metadata keys, training-state keys)
DESCRIPTION_KEYS = ("swinkit.config", "swinkit.preprocessor")


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


def _hub_download(repo_id: str, *, missing_path: bool = False) -> Path:
    """The local snapshot of hub repository ``repo_id``; ``missing_path``: it was also looked for as a path."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    not_a_path = f"no file or folder {repo_id}, and " if missing_path else ""
    patterns = ["config.json", PREPROCESSOR_FILE, "model.safetensors", "pytorch_model.bin"]
    patterns += ["*.index.json", "model-*-of-*.safetensors", "pytorch_model-*-of-*.bin"]  # sharded
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"{not_a_path}no Hugging Face hub id {repo_id!r} in the local cache (the hub is offline or "
            "unreachable); download it once with network access or pass an existing local path"
        ) from None
    except Exception as e:  # huggingface_hub raises many kinds: repository not found, HTTP errors...
        raise ValueError(f"{not_a_path}could not fetch {repo_id!r} from the Hugging Face hub: {e}") from None


def resolve_source(source: str | os.PathLike) -> Path:
    """A local path for ``source``: an existing file or folder, else a preset's or a hub id's snapshot."""
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    if text in PRESETS:
        hub_id = PRESETS[text].hub_id
        if hub_id is None:
            raise ValueError(f"preset {text!r} has no published weights; use swinkit.create_model({text!r})")
        return _hub_download(hub_id)
    from swinkit.models.segmentation.config import segmentation_hub_id

    if (segmentation_hub := segmentation_hub_id(text)) is not None:
        return _hub_download(segmentation_hub)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith("."):  # owner/name
        return _hub_download(text, missing_path=True)
    raise FileNotFoundError(f"no file or folder {text} (nor a preset name or an owner/name hub id)")


def _folder_weights(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the file read, its tensors) for a HF folder: one weights file, or the shards an index lists."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name, load_state_file(folder / name)
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            return index, _read_shards(index)
    names = ", ".join(WEIGHT_FILES + tuple(f"{n}.index.json" for n in WEIGHT_FILES))
    raise FileNotFoundError(f"{folder} holds none of {names}")


def _read_shards(index: Path) -> dict[str, Any]:
    """The tensors of a sharded checkpoint (transformers' ``*.index.json`` and the shard files it maps)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{index} is not a sharded-checkpoint index (no weight_map)") from None
    tensors: dict[str, Any] = {}
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:
            raise ValueError(f"{index} names shard {shard!r} outside its folder; refused")
        tensors.update(load_state_file(index.parent / shard))
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise ValueError(f"{index} maps {len(absent)} tensors its shards do not hold, e.g. {absent[0]}")
    return tensors


def load_checkpoint(
    source: str | os.PathLike, *, layout: str | None = None, preset: str | None = None
) -> Checkpoint:
    """Read ``source`` into the canonical layout, with its architecture.

    The architecture comes from the folder's config.json, else from ``preset`` (the checkpoint's tensors
    must then fit it), else from the tensor shapes.
    """
    path = resolve_source(source)
    weights, loaded = _folder_weights(path) if path.is_dir() else (path, load_state_file(path))
    hf_config, preprocessing = _description(path, weights, loaded)
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


def _description(
    path: Path, weights: Path, loaded: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (config.json, preprocessor config) of a checkpoint read from ``path`` (file or folder)."""
    hf_config = preprocessing = None
    if path.is_dir():
        hf_config, preprocessing = _folder_description(path)
    embedded = _embedded_description(weights, loaded)
    if embedded[0] is not None:  # the file describes itself (every checkpoint swinkit writes does)
        hf_config = embedded[0]
        preprocessing = preprocessing or embedded[1]  # a folder's own file (what transformers reads) first
    elif not path.is_dir() and path.parent.name == "checkpoints":  # a run's checkpoint from before that
        hf_config, preprocessing = _folder_description(path.parent.parent)
    return hf_config, preprocessing


def read_description(
    source: str | os.PathLike,
) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """(local path, config.json, preprocessor config) of ``source`` by ``load_checkpoint``'s rule, without its
    tensors: a folder's or safetensors file's weights are not read (a PyTorch file's description is among
    its keys, so that file is)."""
    path = resolve_source(source)
    weights = path
    if path.is_dir():
        weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), path)
    pytorch_file = weights.is_file() and weights.suffix != ".safetensors"
    loaded = load_state_file(weights) if pytorch_file else {}
    config, preprocessing = _description(path, weights, loaded)
    if (
        config is None and loaded
    ):  # an mmseg segmentor, UperNet or mmdet detector file: described by its tensors
        from swinkit.models.detection.checkpoints import detection_description
        from swinkit.models.segmentation.checkpoints import segmentation_description

        config = segmentation_description(loaded) or detection_description(loaded)
    return path, config, preprocessing


def describe_source(source: str | os.PathLike, config: SwinConfig) -> Checkpoint:
    """``source`` as a headless Checkpoint of the trunk ``config`` without tensors, carrying its own
    preprocessor config, for ``preprocessing_for``."""
    path, _, preprocessing = read_description(source)
    return Checkpoint(ClassifierConfig(config, num_classes=0), {}, "description", preprocessing, path)


def _folder_description(folder: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The folder's config.json and preprocessor_config.json, each None when absent."""
    found = []
    for name in ("config.json", PREPROCESSOR_FILE):
        file = folder / name
        found.append(json.loads(file.read_text()) if file.is_file() else None)
    return found[0], found[1]


def description_metadata(
    config: ClassifierConfig, preprocessing: Preprocessing | dict[str, Any] | None = None
) -> dict[str, str]:
    """What a checkpoint file needs to load as exactly its model: the config.json (architecture, labels,
    run-time rules) and the preprocessor config, as JSON strings (safetensors metadata; training state)."""
    metadata = {DESCRIPTION_KEYS[0]: json.dumps(hf.config_to_hf(config))}
    if preprocessing is not None:
        data = preprocessing if isinstance(preprocessing, dict) else preprocessor_config(preprocessing)
        metadata[DESCRIPTION_KEYS[1]] = json.dumps(data)
    return metadata


def _embedded_description(
    weights: Path, loaded: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (config.json, preprocessor config) a file carries: safetensors metadata or training-state keys."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            source: Mapping[str, Any] = f.metadata() or {}
    else:
        source = loaded
    found = []
    for key in DESCRIPTION_KEYS:
        value = source.get(key)
        try:
            found.append(json.loads(value) if isinstance(value, str) else None)
        except json.JSONDecodeError:
            raise ValueError(f"{weights}: its {key} entry is not valid JSON") from None
    return found[0], found[1]


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

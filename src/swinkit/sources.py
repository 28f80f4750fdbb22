"""Where a checkpoint comes from and what describes it, before any tensor is fitted to a model.

A *source* is a Hugging Face hub id, a directory (HF layout: config.json + weights, maybe sharded), a
checkpoint file in any layout ``swinkit.layouts`` knows, or a preset name whose hub id is used. A file
swinkit writes carries its own description (config.json and preprocessor config) in its metadata.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swinkit.checkpoint_io import load_state_file
from swinkit.data.preprocess import preprocessor_config
from swinkit.layouts import hf
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import PRESETS, Preprocessing

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSOR_FILE = "preprocessor_config.json"
# where a checkpoint file carries its own description (safetensors metadata keys, training-state keys)
DESCRIPTION_KEYS = ("swinkit.config", "swinkit.preprocessor")


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


def folder_weights(folder: Path) -> tuple[Path, dict[str, Any]]:
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


def checkpoint_description(
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
    config, preprocessing = checkpoint_description(path, weights, loaded)
    if (
        config is None and loaded
    ):  # an mmseg segmentor, UperNet or mmdet detector file: described by its tensors
        from swinkit.models.detection.checkpoints import detection_description
        from swinkit.models.segmentation.checkpoints import segmentation_description

        config = segmentation_description(loaded) or detection_description(loaded)
    return path, config, preprocessing


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

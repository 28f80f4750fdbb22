"""Safe reading and atomic writing of checkpoint files.

Reading never unpickles code: ``.safetensors`` goes through safetensors, anything else through
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain containers.
Writing goes to a temporary file in the destination folder, is flushed to disk, then renamed over the
destination, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects that are not plain tensors and containers; it was not executed."""


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it is fsynced and renamed over it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix + ".tmp", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would have given
        os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(destination: str | os.PathLike, text: str) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(destination: str | os.PathLike, data: Any) -> None:
    atomic_write_text(destination, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], destination: str | os.PathLike, metadata: dict | None = None
) -> None:
    """Write tensors (made contiguous, shared storage broken) atomically as safetensors."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(destination, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})


def save_torch(obj: Any, destination: str | os.PathLike) -> None:
    """``torch.save`` atomically (for training state that holds more than tensors)."""
    with atomic_path(destination, ".pt") as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``; a file carrying pickled code raises UnsafeCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        offender = re.search(
            r"(?:unsupported GLOBAL|Unsupported global|Unsupported operand)[^\n]*?(?=\.?\n|\.?$)", str(e)
        )
        detail = f" ({offender.group(0).strip()})" if offender else ""
        raise UnsafeCheckpointError(
            f"{path} contains pickled objects other than tensors{detail}; refused, nothing was executed"
        ) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from None


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file (safetensors or PyTorch) into a dict, safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    loaded = load_torch(path)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)

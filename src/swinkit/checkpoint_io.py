"""Safe reading and atomic writing of checkpoint files.

Reading never unpickles code: ``.safetensors`` goes through safetensors, anything else through
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain containers.
Writing follows one rule (``open_output``): ``-`` is standard output; a device or FIFO (or a symlink to
one) is written through; a regular file goes to a temporary file in the destination folder, is flushed to
disk, then renamed over the destination, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import stat
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load_file, save, save_file


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects that are not plain tensors and containers; it was not executed."""


STDOUT = "-"  # the output destination that means standard output


def _is_stream(path: Path) -> bool:
    """True for an existing path (or a symlink to one) that is not a regular file or folder (a device, FIFO),
    and for any existing path under /dev or /proc: ``/dev/stdout`` redirected to a file resolves to that file,
    which the shell holds open, so it is written through too."""
    if str(path.absolute()).startswith(("/dev/", "/proc/")) and path.exists():
        return True
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def writes_through(destination: str | os.PathLike) -> bool:
    """Whether ``destination`` is a stream written through (``-``, a device, a FIFO, a symlink to one)
    rather than a regular file replaced atomically: such an output cannot be read back or resumed."""
    return str(destination) == STDOUT or _is_stream(Path(destination))


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A path to write ``destination`` through, following the output rule of ``open_output``.

    For a regular file (or a new path) it is a temporary file beside it, fsynced and renamed over it on
    success; for a device or FIFO (or a symlink to one) it is ``destination`` itself, written through.
    A symlink to a regular file has its target replaced; the link stays. ``-`` (standard output) has no
    path: use ``open_output``.
    """
    if str(destination) == STDOUT:
        raise ValueError("'-' (standard output) has no path; write it with open_output")
    destination = Path(destination)
    if _is_stream(destination):
        yield destination
        return
    target = Path(os.path.realpath(destination))  # a symlink's target is replaced, not the link
    make_folder(target.parent, destination)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, _mode_for(target))
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def make_folder(folder: Path, destination: str | os.PathLike) -> None:
    """Create ``folder`` (and its parents) for ``destination``; a file in the way is a ValueError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise ValueError(f"cannot write {destination}: {blocking} is a file, not a folder") from None


def _mode_for(target: Path) -> int:
    """The permissions open() would leave: the existing file's, else 0666 less the umask (mkstemp's are 0600)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextlib.contextmanager
def open_output(destination: str | os.PathLike, mode: str = "w", suffix: str = "") -> Iterator[IO[Any]]:
    """Open ``destination`` for writing (``mode`` ``"w"`` text UTF-8 or ``"wb"``) by the one output rule:

    - ``-`` is standard output (``sys.stdout``, or its binary buffer), flushed and never closed;
    - an existing device or FIFO, or a symlink to one (``/dev/stdout``, ``/dev/null``), is written through,
      never replaced or unlinked;
    - a regular file or a new path is replaced atomically: a temporary file in the same folder, fsynced and
      renamed over it, so a failure mid-write leaves the old content; a symlink to a regular file keeps the
      link and has its target replaced.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_output writes with mode 'w' or 'wb', not {mode!r}")
    encoding = None if mode == "wb" else "utf-8"
    if str(destination) == STDOUT:
        sys.stdout.flush()
        stream = sys.stdout.buffer if mode == "wb" else sys.stdout
        yield stream
        stream.flush()
        return
    with atomic_path(destination, suffix) as path, open(path, mode, encoding=encoding) as f:
        yield f


def atomic_write_text(destination: str | os.PathLike, text: str) -> None:
    with open_output(destination, "w") as f:
        f.write(text)


def atomic_write_json(destination: str | os.PathLike, data: Any) -> None:
    atomic_write_text(destination, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], destination: str | os.PathLike, metadata: dict | None = None
) -> None:
    """Write tensors (made contiguous, shared storage broken) as safetensors, by the rule of ``open_output``."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    metadata = {"format": "pt", **(metadata or {})}
    if str(destination) == STDOUT or _is_stream(Path(destination)):  # save_file would replace a FIFO
        with open_output(destination, "wb") as f:
            f.write(save(tensors, metadata=metadata))
        return
    with atomic_path(destination, ".safetensors") as path:
        save_file(tensors, str(path), metadata=metadata)


def save_torch(obj: Any, destination: str | os.PathLike) -> None:
    """``torch.save`` by the rule of ``open_output`` (for training state that holds more than tensors)."""
    with open_output(destination, "wb", ".pt") as f:
        torch.save(obj, f)


# Leading bytes of files people pass by mistake, and what to call them.
NOT_CHECKPOINTS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
)


def _looks_like(head: bytes) -> str | None:
    """What ``head`` (a file's first bytes) looks like when it cannot start a PyTorch zip or pickle; else None."""
    if head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, a (legacy) pickle
        return None
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "it looks like a WebP image"
    for magic, kind in NOT_CHECKPOINTS:
        if head.startswith(magic):
            return f"it looks like {kind}"
    if not head:
        return "it is empty"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is neither a PyTorch zip or pickle nor safetensors"
    return "it looks like a text file"


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with its JSON header's length (little-endian uint64) and the header's ``{``."""
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def _check_is_checkpoint(path: Path) -> None:
    """ValueError naming what ``path`` looks like when it is not a checkpoint file at all."""
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head, path.stat().st_size):
        return
    kind = _looks_like(head)
    if kind is not None:
        raise ValueError(f"{path} is not a checkpoint file ({kind})")


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``; a file carrying pickled code raises UnsafeCheckpointError."""
    _check_is_checkpoint(Path(path))
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
    _check_is_checkpoint(path)
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    loaded = load_torch(path)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)

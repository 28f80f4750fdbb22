"""The output of a batch run: a resumable JSONL log, the record of the model that wrote it, and shards.

``OUTPUT.meta.json`` (written atomically) records the model an output's rows came from: its source as given,
a fingerprint of its config, labels and weights, and the settings that shape its rows (the predictor's
``info()`` with its runtime, precision, score threshold and maximum detections, and ``top_k``/``threshold``).
A run with another model or other settings refuses the output unless told to start afresh. Under torchrun each rank appends to ``OUTPUT.rank{r}-of-{w}.jsonl``; rank 0 merges the
shards into OUTPUT in input order and removes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from swinkit.checkpoint_io import STDOUT, atomic_path, atomic_write_json

log = logging.getLogger(__name__)


def id_key(item_id: str) -> int:
    """A 64-bit digest of an id: sets of these stay small for millions of inputs."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")


class ResumableJsonl:
    """An append-only JSONL log of rows keyed by ``"image"``: knows which ids it holds, never writes one twice."""

    def __init__(self, path: str | os.PathLike, key: str = "image") -> None:
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[int] = set()
        self.resumed = self._recover()
        self._file = open(self.path, "a", encoding="utf-8")  # closed by close()

    def _recover(self) -> int:
        """Read the ids already written; drop a torn last line. Returns how many rows were there."""
        if not self.path.exists():
            return 0
        keep = 0
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    log.warning(
                        "%s: dropping a torn last line (%d bytes) from an interrupted run",
                        self.path,
                        len(line),
                    )
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict) or self.key not in row:
                    raise ValueError(
                        f"{self.path} line {number} is not a JSON row with {self.key!r}; fix or remove it"
                    )
                self.done.add(id_key(str(row[self.key])))
                keep += len(line)
        if keep != self.path.stat().st_size:
            os.truncate(self.path, keep)
        return len(self.done)

    def __contains__(self, item_id: str) -> bool:
        return id_key(item_id) in self.done

    def write(self, row: dict[str, Any]) -> bool:
        """Append ``row`` unless its id is already written; returns whether it was written."""
        key = id_key(str(row[self.key]))
        if key in self.done:
            return False
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(key)
        return True

    def sync(self) -> None:
        """Flush and fsync what was written."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamJsonl(ResumableJsonl):
    """The rows of one run written through a stream (``-``, a FIFO, a device): nothing to resume, no fsync."""

    def __init__(self, destination: str | os.PathLike, key: str = "image") -> None:
        self.path, self.key, self.done, self.resumed = Path(destination), key, set(), 0
        self._owned = str(destination) != STDOUT
        self._file = open(destination, "a", encoding="utf-8") if self._owned else sys.stdout

    def sync(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.sync()
        if self._owned and not self._file.closed:
            self._file.close()


def complete_lines(path: Path) -> list[bytes]:
    """The newline-terminated lines of a JSONL file (a torn last line left by a kill is not one)."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return [line for line in f if line.endswith(b"\n")]


def row_id(line: bytes, path: Path, key: str = "image") -> str:
    """The id of one output line; ValueError naming the file when it is not an output row."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if not isinstance(row, dict) or key not in row:
        raise ValueError(f"{path} holds a line that is not a JSON row with {key!r}; fix or remove it")
    return str(row[key])


def meta_path(output: str | os.PathLike) -> Path:
    return Path(f"{output}.meta.json")


def shard_path(output: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(f"{output}.rank{rank}-of-{world_size}.jsonl")


def model_fingerprint(model: torch.nn.Module, labels: Iterable[str]) -> tuple[str, str]:
    """(config hash, fingerprint of config, labels and a strided sample of every weight tensor)."""
    config = json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()
    config_hash = hashlib.sha256(config).hexdigest()[:16]
    digest = hashlib.sha256(config + json.dumps(list(labels)).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.float64)  # (<= ~8192,)
        digest.update(f"{name}{tuple(tensor.shape)}".encode() + sample.numpy().tobytes())
    return config_hash, digest.hexdigest()[:16]


def run_settings(predictor: Any) -> dict[str, Any]:
    """The settings recorded with a batch output, as JSON would read them back (tuples become lists): the
    predictor's ``info()``, with its raw ``top_k`` and ``threshold`` unless it says (``flags_shape_rows =
    False``) that its info already holds their effect on the rows or that they have none."""
    settings: dict[str, Any] = {"info": predictor.info()}
    if getattr(predictor, "flags_shape_rows", True):
        settings.update(
            top_k=getattr(predictor, "top_k", None), threshold=getattr(predictor, "threshold", None)
        )
    return json.loads(json.dumps(settings, default=str))


def _changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings whose values differ between two ``run_settings`` dicts."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key} {a!r} -> {b!r}")
    return changed


def _check_settings(output: Path, old: dict[str, Any], meta: dict[str, Any], advice: str) -> None:
    """Refuse ``output`` when its rows were written with other settings (outputs from before settings were
    recorded carry none and are accepted)."""
    if "settings" not in old or "settings" not in meta:
        return
    changed = _changed_settings(old["settings"], meta["settings"])
    if changed:
        raise ValueError(
            f"{output} holds rows written with other settings ({'; '.join(changed[:4])}); {advice}"
        )


def _legacy_labels(output: Path) -> list[str] | None:
    """The labels of the first prediction row of an output written without a meta file."""
    for line in complete_lines(output):
        row = json.loads(line)
        if isinstance(row, dict) and "labels" in row:
            return list(row["labels"])
    return None


def _check_owner(output: Path, meta: dict[str, Any]) -> None:
    """Refuse ``output`` when its meta file (or, without one, its rows' labels) names another model."""
    sidecar = meta_path(output)
    advice = "pass --overwrite to start afresh or choose another --output"
    if sidecar.exists():
        try:
            old = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{sidecar} is not JSON ({e}); {advice}") from None
        if old.get("fingerprint") != meta["fingerprint"]:
            raise ValueError(
                f"{output} holds rows of model {old.get('model')!r} (fingerprint {old.get('fingerprint')}), "
                f"not of {meta['model']!r} (fingerprint {meta['fingerprint']}); {advice}"
            )
        _check_settings(output, old, meta, advice)
        return
    labels = _legacy_labels(output)
    if labels is not None and labels != meta["labels"]:
        raise ValueError(
            f"{output} holds rows of a model with labels {labels[:5]}, not of {meta['model']!r}; {advice}"
        )


def _drop_errors(path: Path) -> int:
    """Rewrite a JSONL output without its error rows (atomically); how many were dropped."""
    lines = complete_lines(path)
    kept = [line for line in lines if b'"error"' not in line or "error" not in json.loads(line)]
    if len(kept) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"".join(kept))
    return len(lines) - len(kept)


def prepare_output(
    output: str | os.PathLike, meta: dict[str, Any], *, overwrite: bool, retry_errors: bool
) -> None:
    """Make ``output`` this model's (``overwrite``: start afresh), drop error rows to retry, write the meta."""
    output = Path(output)
    shards = list(output.parent.glob(f"{output.name}.rank*-of-*.jsonl")) if output.parent.exists() else []
    if overwrite:
        # a symlinked output keeps its link: the file it points to is what starts afresh
        for path in (Path(os.path.realpath(output)), meta_path(output), *shards):
            path.unlink(missing_ok=True)
    else:
        _check_owner(output, meta)
    if retry_errors:
        dropped = sum(_drop_errors(path) for path in (output, *shards))
        log.info("%d error rows dropped from %s to be retried", dropped, output)
    atomic_write_json(meta_path(output), meta)


def merge_shards(output: str | os.PathLike, ids: Iterable[str], world_size: int) -> int:
    """Append the shards' rows to ``output`` in the order of ``ids`` (atomically), then remove the shards.

    Returns the number of rows merged."""
    output = Path(output)
    shards = [shard_path(output, rank, world_size) for rank in range(world_size)]
    existing = complete_lines(output)
    written = {id_key(row_id(line, output)) for line in existing}
    pending = {id_key(row_id(line, p)): line for p in shards for line in complete_lines(p)}
    merged = []
    for item_id in ids:
        key = id_key(item_id)
        if key in pending and key not in written:
            merged.append(pending.pop(key))
            written.add(key)
    merged += [line for key, line in pending.items() if key not in written]  # ids the input no longer has
    with atomic_path(output) as tmp:
        tmp.write_bytes(b"".join(existing + merged))
    for path in shards:
        path.unlink(missing_ok=True)
    return len(merged)

"""Batch classification of any number of images: streamed, parallel decoding, resumable JSONL output.

Inputs (``iter_inputs``):

* a folder: every image file below it (by extension), walked in sorted order; id = the file's path;
* a ``.jsonl`` file: one record per line, either a JSON string (a path) or an object with ``path`` (a file)
  or ``image`` (base64-encoded bytes, optionally a ``data:`` URL), and optionally ``id``;
* a ``.csv`` file with a header: a ``path`` column or an ``image`` column of base64-encoded images (the Azure
  ML batch-endpoint convention), and optionally an ``id`` column.

Relative paths in a JSONL/CSV file are relative to that file's folder. A record's id is its ``id`` field,
else its path, else ``row N`` (N counted from 0 among the data rows).

Output: one JSON object per line, ``{"image": ID, "probs": [...], "labels": [...]}`` or, for an input that
cannot be read, ``{"image": ID, "error": "..."}``. Rows are appended and flushed as they are computed, and
fsynced after every batch. A re-run reads the existing output, truncates a torn last line left by a kill, and
skips every id already there: each input ends up in the output exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from swinkit.data.decode import ImageDecodeError, decode_base64_text, decode_image
from swinkit.data.preprocess import ImageProcessor
from swinkit.inference import Predictor

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .png .gif .webp .bmp .dib .tif .tiff .ppm .pgm .pbm .pnm .ico .jfif .tga".split()
)


@dataclass(frozen=True)
class InputItem:
    """One image to classify: a file path or base64 text, and the id its output row carries."""

    id: str
    path: str | None = None
    base64: str | None = None
    error: str | None = None  # the record itself is unusable: it becomes an error row


def id_key(item_id: str) -> int:
    """A 64-bit digest of an id: sets of these stay small for millions of inputs."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` (by extension, case-insensitive), in sorted order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(root) / name


def _record_item(record: Any, index: int, base: Path, where: str) -> InputItem:
    if isinstance(record, str):
        record = {"path": record}
    if not isinstance(record, dict) or not (record.get("path") or record.get("image")):
        raise ValueError(f"{where}: expected a path string or an object with 'path' or 'image'")
    path = record.get("path")
    if path:
        path = str(base / path) if not os.path.isabs(path) else path
    item_id = str(record["id"]) if record.get("id") not in (None, "") else path or f"row {index}"
    return InputItem(item_id, path=path or None, base64=None if path else record["image"])


def _checked_item(record: Any, index: int, base: Path, where: str) -> InputItem:
    """The item of one record, or an error item (id: ``where``) when the record is unusable."""
    try:
        return _record_item(record, index, base, where)
    except ValueError as e:
        return InputItem(where, error=str(e))


def _iter_jsonl(path: Path) -> Iterator[InputItem]:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first record
        index = 0
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield InputItem(where, error=f"{where} is not JSON: {e}")
            else:
                yield _checked_item(record, index, path.parent, where)
            index += 1


def _iter_csv(path: Path) -> Iterator[InputItem]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, newline="", encoding="utf-8-sig") as f:  # spreadsheet exports start with a BOM
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "image"} & set(reader.fieldnames):
            raise ValueError(
                f"{path} needs a 'path' or an 'image' (base64) column; it has {reader.fieldnames}"
            )
        for index, row in enumerate(reader):
            yield _checked_item(row, index, path.parent, f"{path} row {index}")


def iter_inputs(source: str | os.PathLike) -> Iterator[InputItem]:
    """The items of a folder, a ``.jsonl`` or a ``.csv`` input (see the module docstring), lazily."""
    path = Path(source)
    if path.is_dir():
        return (InputItem(str(p), path=str(p)) for p in iter_image_files(path))
    if not path.is_file():
        raise FileNotFoundError(f"no such input folder or file: {path}")
    if path.suffix.lower() == ".jsonl":
        return _iter_jsonl(path)
    if path.suffix.lower() == ".csv":
        return _iter_csv(path)
    raise ValueError(f"{path}: the input must be a folder, a .jsonl or a .csv file")


def count_inputs(source: str | os.PathLike) -> int | None:
    """How many items a folder or JSONL input holds (None for CSV, where counting means parsing it all)."""
    path = Path(source)
    if path.is_dir():
        return sum(1 for _ in iter_image_files(path))
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    return None


def load_item(item: InputItem) -> Any:
    """Decode one item into an RGB image; ImageDecodeError naming the item when it cannot be read."""
    if item.error is not None:
        raise ImageDecodeError(item.error)
    if item.path is not None:
        return decode_image(item.path, name=item.id if item.id != item.path else None)
    text = item.base64
    if not isinstance(text, str):
        raise ImageDecodeError(f"{item.id}: the image field must be base64 text, got {type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = decode_base64_text(text)
    except ValueError as e:
        raise ImageDecodeError(f"{item.id}: the image field is {e}") from None
    return decode_image(data, name=item.id)


class ImageStream(IterableDataset):
    """Items of an input, skipping done ids, decoded and preprocessed; each DataLoader worker takes every n-th.

    Yields ``(id, pixels (3, H, W) or None, error message or None)``.
    """

    def __init__(self, source: str | os.PathLike, processor: ImageProcessor, done: frozenset[int]) -> None:
        self.source, self.processor, self.done = source, processor, done

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index, item in enumerate(iter_inputs(self.source)):
            if index % workers != worker or id_key(item.id) in self.done:
                continue
            try:
                yield item.id, self.processor(load_item(item)), None
            except ImageDecodeError as e:
                yield item.id, None, str(e)


def collate(batch: list[tuple[str, torch.Tensor | None, str | None]]) -> list[tuple[str, Any, str | None]]:
    """Keep the batch as a list: images may fail or differ in size; ``run_batch`` groups them."""
    return batch


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


def _predict_group(predictor: Predictor, group: list[tuple[str, torch.Tensor]]) -> list[dict[str, Any]]:
    probs = predictor.predict_pixels(torch.stack([pixels for _, pixels in group])).tolist()  # (B, classes)
    return [
        {"image": item_id, "probs": p, "labels": predictor.labels}
        for (item_id, _), p in zip(group, probs, strict=True)
    ]


def predict_rows(predictor: Predictor, batch: Iterable[tuple[str, Any, str | None]]) -> list[dict[str, Any]]:
    """Output rows for one collated batch: error rows, and predictions run per group of equal-size images."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for item_id, pixels, error in batch:
        if error is not None:
            rows.append({"image": item_id, "error": error})
        else:
            groups.setdefault(tuple(pixels.shape), []).append((item_id, pixels))
    for group in groups.values():
        rows.extend(_predict_group(predictor, group))
    return rows


@dataclass
class BatchSummary:
    """What a batch run did."""

    written: int  # rows written by this run
    errors: int  # of which error rows
    skipped: int  # rows already in the output from earlier runs


def run_batch(
    predictor: Predictor,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_workers: int = 2,
    progress: bool = True,
) -> BatchSummary:
    """Classify every item of ``source`` not yet in ``output``, appending one row per item (see module doc)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    total = count_inputs(source)
    with ResumableJsonl(output) as out:
        stream = ImageStream(source, predictor.processor, frozenset(out.done))
        loader = DataLoader(
            stream,
            batch_size=predictor.batch_size,
            num_workers=num_workers,
            collate_fn=collate,
            persistent_workers=False,
        )
        skipped, written, errors, repeated = out.resumed, 0, 0, 0
        remaining = None if total is None else max(total - skipped, 0)
        bar = tqdm(total=remaining, unit="img", disable=not progress, desc="classifying", smoothing=0.1)
        with bar:
            for batch in loader:
                for row in predict_rows(predictor, batch):
                    if out.write(row):
                        written += 1
                        errors += "error" in row
                    else:  # done ids were skipped before decoding, so this id came twice in this input
                        repeated += 1
                out.sync()
                bar.update(len(batch))
                if errors:
                    bar.set_postfix(errors=errors)
    if repeated:
        log.warning("%d inputs repeated an id already written in this run; only the first was kept", repeated)
    log.info("%d rows written (%d errors), %d already present", written, errors, skipped)
    return BatchSummary(written, errors, skipped)

"""Batch classification of any number of images: streamed, parallel decoding, resumable JSONL output.

Inputs (``iter_inputs``) are read by ``swinkit.data.records``, the reader train and evaluate use too: a
folder (every image file below it, sorted), a ``.csv`` (a ``path`` column, or an ``image`` column of base64
images as Azure ML batch endpoints take) or a ``.jsonl`` (a path string, or an object with ``path``,
``image_url`` or base64 ``image``); labels are ignored. A record's id is its ``id`` field, else its path, else
``row N`` (N counted from 0 among the data rows); relative paths are relative to the listing file's folder.

Output: one JSON object per line, ``{"image": ID, "probs": [...], "labels": [...]}`` or, for an input that
cannot be read, ``{"image": ID, "error": "..."}``. Rows are appended and flushed as they are computed, and
fsynced after every batch. A re-run reads the existing output, truncates a torn last line left by a kill, and
skips every id already there: each input ends up in the output exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from swinkit.data.decode import ImageDecodeError, decode_base64_text, decode_image
from swinkit.data.preprocess import ImageProcessor
from swinkit.data.records import ImageRecord, iter_image_files, iter_records, resolve_path
from swinkit.inference import Predictor

log = logging.getLogger(__name__)

InputItem = ImageRecord  # one image to classify: a file reference or base64 text, and its row's id


def id_key(item_id: str) -> int:
    """A 64-bit digest of an id: sets of these stay small for millions of inputs."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")


def iter_inputs(source: str | os.PathLike) -> Iterator[ImageRecord]:
    """The records of a folder, a ``.jsonl`` or a ``.csv`` input (``swinkit.data.records``), lazily."""
    return iter_records(source, labelled=False)


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
    if item.reference is not None:
        path = resolve_path(item)
        if path is None:
            raise ImageDecodeError(f"{item.id}: no such file")
        return decode_image(path, name=item.id if item.id != path else None)
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
    first_error: str | None = None  # the message of this run's first error row

    @property
    def all_failed(self) -> bool:
        """This run wrote rows and every one of them is an error."""
        return self.written > 0 and self.errors == self.written


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
        skipped, written, errors, repeated, first_error = out.resumed, 0, 0, 0, None
        remaining = None if total is None else max(total - skipped, 0)
        bar = tqdm(total=remaining, unit="img", disable=not progress, desc="classifying", smoothing=0.1)
        with bar:
            for batch in loader:
                for row in predict_rows(predictor, batch):
                    if out.write(row):
                        written += 1
                        errors += "error" in row
                        first_error = first_error or row.get("error")
                    else:  # done ids were skipped before decoding, so this id came twice in this input
                        repeated += 1
                out.sync()
                bar.update(len(batch))
                if errors:
                    bar.set_postfix(errors=errors)
    if repeated:
        log.warning("%d inputs repeated an id already written in this run; only the first was kept", repeated)
    log.info("%d rows written (%d errors), %d already present", written, errors, skipped)
    return BatchSummary(written, errors, skipped, first_error)

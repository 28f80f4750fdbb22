"""Input records: the images (and labels) a folder, a CSV or a JSONL file lists, for train, evaluate and batch.

``iter_records(source, labelled=...)`` reads, lazily and in file order:

* a folder: with ``labelled``, one sub-folder per class (the label is the sub-folder's name, images anywhere
  below it); without, every image file below it. Walked in sorted order; an image is a file whose extension
  is in ``decode.IMAGE_EXTENSIONS`` (the formats the decoder opens).
* a ``.csv`` file. With a header (a row naming any known column): the image is in a ``path`` column (or
  ``image_path``, ``image_url``, ``file``, ``filename``, ``file_name``, ``name``: a file path or URL) or in an
  ``image`` column (base64 text, optionally a ``data:`` URL, the Azure ML batch-endpoint convention; a cell
  holding a ``.`` is a file name instead, which base64 never holds); the labels in a ``label`` or ``labels``
  column (else the column after the image's); an ``id`` column is optional. Without a header: path, label.
* a ``.jsonl`` file (``.json`` too): one record per line, a JSON string (a path) or an object with
  ``image_url`` or ``path`` (a file path or URL) or ``image`` (base64, as in a CSV), ``label`` (a string, or a
  list for multi-label: the Azure ML format) and optionally ``id``.

Multi-label separators: in a ``label`` column (and in a JSONL label string) ``;``, ``|`` or ``,`` separate
several labels of one image and spaces belong to a label (``golden retriever``); in a ``labels`` column
(Azure's multi-label ``filename,labels`` CSV) whitespace separates labels too (``can milk_bottle``).

Relative paths are relative to the listing file's folder; Azure ``azureml://.../paths/...`` URLs and paths
written from another root are matched by their trailing parts (``resolve_path``). A record's id is its
``id``, else its path, else ``row N``/``line N``. A record that cannot be used (not JSON, no image) is a
record with ``error`` set: batch writes it as an error row, training refuses it.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from swinkit.data.decode import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "image_path", "image_url", "file", "filename", "file_name", "name")
BASE64_COLUMN = "image"
_KNOWN_COLUMNS = {*PATH_COLUMNS, BASE64_COLUMN, "label", "labels", "id"}
LABEL_SEPARATORS = re.compile(r"[;|,]")
LIST_SEPARATORS = re.compile(r"[;|,\s]")


@dataclass(frozen=True)
class ImageRecord:
    """One listed image: a file ``reference`` (resolved with ``resolve_path``) or ``base64`` text."""

    id: str
    where: str  # "FILE row N" / "FILE line N", or the image's path for folder records
    reference: str | None = None  # a path or URL as written, relative to ``base``
    base: str = ""
    base64: str | None = None
    labels: tuple[str, ...] | None = None  # None: the record names no label
    listed: bool = False  # the labels were written as a list (a JSONL list, a ``labels`` column)
    error: str | None = None  # the record is unusable


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` (by extension, case-insensitive; hidden ones skipped), in sorted order."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                yield Path(root) / name


def _class_folder_records(root: Path) -> Iterator[ImageRecord]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (expected one folder of images per class)")
    empty = []
    for name in classes:
        count = 0
        for path in iter_image_files(root / name):
            count += 1
            yield ImageRecord(str(path), str(path), reference=str(path), labels=(name,))
        if not count:
            empty.append(name)
    if empty:
        raise ValueError(
            f"{root}: class folders without images: {', '.join(empty)} (remove them or add images)"
        )


def split_labels(cell: str, separators: re.Pattern = LABEL_SEPARATORS) -> tuple[str, ...]:
    """The labels of one cell (see the module docstring for the separators)."""
    return tuple(label.strip() for label in separators.split(cell) if label.strip())


def _default_id(reference: str, base: Path) -> str:
    if os.path.isabs(reference) or len(urlparse(reference).scheme) > 1:
        return reference
    return str(base / reference)


def _image_fields(fields: dict[str, Any]) -> tuple[str | None, str | None]:
    """(file reference, base64 text) of a record; an ``image`` value holding a dot is a file name."""
    reference, image = fields.get("path"), fields.get("image")
    if reference not in (None, ""):
        return str(reference).strip(), None
    if isinstance(image, str) and "." in image and not image.startswith("data:"):
        return image.strip(), None
    return None, image if image not in (None, "") else None


def make_record(
    fields: dict[str, Any], labels: tuple[str, ...] | None, where: str, index: int, base: Path, listed: bool
) -> ImageRecord:
    """The record of one CSV row or JSONL object (``fields``: path, image, id); an error record if no image."""
    reference, encoded = _image_fields(fields)
    if reference is None and encoded is None:
        error = f"{where}: expected a path string or an object with 'path', 'image_url' or 'image'"
        return ImageRecord(where, where, error=error)
    explicit = fields.get("id")
    if explicit not in (None, ""):
        item_id = str(explicit)
    else:
        item_id = _default_id(reference, base) if reference is not None else f"row {index}"
    return ImageRecord(item_id, where, reference, str(base), encoded, labels, listed)


def _jsonl_labels(record: dict[str, Any]) -> tuple[tuple[str, ...] | None, bool]:
    label = record.get("label")
    if label is None:
        return None, False
    if isinstance(label, list):
        return tuple(str(x).strip() for x in label if str(x).strip()), True
    return split_labels(str(label)), False


def _pick(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: record.get(key) for key in keys}


def _iter_jsonl(path: Path) -> Iterator[ImageRecord]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:  # -sig: a BOM is not part of the record
        index = 0
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                yield ImageRecord(where, where, error=f"{where} is not JSON: {e}")
                index += 1
                continue
            if isinstance(record, str):
                record = {"path": record}
            if not isinstance(record, dict):
                record = {}
            labels, listed = _jsonl_labels(record)
            fields = {"path": record.get("path") or record.get("image_url"), **_pick(record, "image", "id")}
            yield make_record(fields, labels, where, index, path.parent, listed)
            index += 1


def _csv_columns(header: list[str], path: Path) -> tuple[int | None, int | None, int | None, int | None]:
    """Indices of the (path, base64 image, label, id) columns of a CSV header."""
    names = [cell.strip().lower() for cell in header]

    def find(*wanted: str) -> int | None:
        return next((names.index(w) for w in wanted if w in names), None)

    path_column, image_column = find(*PATH_COLUMNS), find(BASE64_COLUMN)
    if path_column is None and image_column is None:
        raise ValueError(f"{path} needs a 'path' or an 'image' (base64) column; its header is {header}")
    label_column = find("labels", "label")
    after = max(c for c in (path_column, image_column) if c is not None) + 1
    if label_column is None and after < len(names) and names[after] != "id":
        label_column = after
    return path_column, image_column, label_column, find("id")


def _iter_csv(path: Path) -> Iterator[ImageRecord]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:  # spreadsheets write a BOM
        rows = (row for row in csv.reader(f) if any(cell.strip() for cell in row))
        first = next(rows, None)
        if first is None:
            return
        cells = [cell.strip().lower() for cell in first]
        if set(cells) & _KNOWN_COLUMNS and not any(cell.endswith(IMAGE_EXTENSIONS) for cell in cells):
            yield from _csv_rows(rows, first, path)
        else:
            yield from _headerless_rows(itertools.chain([first], rows), path)


def _csv_rows(rows: Iterator[list[str]], header: list[str], path: Path) -> Iterator[ImageRecord]:
    path_column, image_column, label_column, id_column = _csv_columns(header, path)
    listed = label_column is not None and header[label_column].strip().lower() == "labels"
    separators = LIST_SEPARATORS if listed else LABEL_SEPARATORS

    def cell(row: list[str], column: int | None) -> str | None:
        return row[column] if column is not None and column < len(row) else None

    for index, row in enumerate(rows):
        fields = {
            "path": cell(row, path_column),
            "image": cell(row, image_column),
            "id": cell(row, id_column),
        }
        label = cell(row, label_column)
        labels = split_labels(label, separators) if label is not None else None
        yield make_record(fields, labels, f"{path} row {index}", index, path.parent, listed)


def _headerless_rows(rows: Iterator[list[str]], path: Path) -> Iterator[ImageRecord]:
    for index, row in enumerate(rows):
        labels = split_labels(",".join(row[1:])) if len(row) > 1 else None
        yield make_record({"path": row[0].strip()}, labels, f"{path} row {index}", index, path.parent, False)


def iter_records(source: str | os.PathLike, *, labelled: bool) -> Iterator[ImageRecord]:
    """The records of a folder, a ``.csv`` or a ``.jsonl`` input (see the module docstring), lazily.

    FileNotFoundError for a missing source, ValueError for one of another kind or a CSV without an image
    column; unusable records come as records with ``error``.
    """
    path = Path(source)
    if path.is_dir():
        if labelled:
            return _class_folder_records(path)
        return (ImageRecord(str(p), str(p), reference=str(p)) for p in iter_image_files(path))
    if not path.is_file():
        raise FileNotFoundError(f"no such input folder or file: {path}")
    if path.suffix.lower() in (".jsonl", ".json"):
        return _iter_jsonl(path)
    if path.suffix.lower() == ".csv":
        return _iter_csv(path)
    raise ValueError(f"{path}: the input must be a folder, a .jsonl or a .csv file")


def resolve_path(record: ImageRecord) -> str | None:
    """The local file of a record's reference: absolute, relative to its base, a trailing part; None if none."""
    if record.reference is None:
        return None
    parsed = urlparse(record.reference)
    text = parsed.path if len(parsed.scheme) > 1 else record.reference
    base = Path(record.base)
    candidates = [Path(text)] if Path(text).is_absolute() else []
    parts = Path(text.lstrip("/")).parts
    candidates += [base.joinpath(*parts[i:]) for i in range(len(parts))]
    candidates += [base / "images" / parts[-1]] if parts else []
    for candidate in candidates:
        try:
            if candidate.is_file():
                return str(candidate)
        except (OSError, ValueError):  # a name too long or with a NUL byte is no file
            continue
    return None

"""Labelled image collections: a class-per-folder tree, a CSV (``path,label``) or an Azure ML JSONL file.

``load_dataset`` reads any of them into ``LabeledImages`` (paths and label indices); ``split`` holds out a
seeded validation fraction; ``TrainImages`` and ``EvalImages`` are the torch datasets the engine iterates.
Training augmentation draws from a generator seeded by (seed, epoch, index), so every sample of every
epoch is reproducible whatever the number of DataLoader workers.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from swinkit.data.decode import decode_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
_HEADER_NAMES = {"path", "image", "image_path", "image_url", "file", "filename", "file_name", "name"}
# Between the labels of one cell. Spaces belong to a label, except in a column headed "labels" (the Azure
# multi-label fridgeObjects CSV: "filename,labels" with "can milk_bottle").
_LABEL_SEPARATORS = re.compile(r"[;|,]")
_LIST_SEPARATORS = re.compile(r"[;|,\s]")


@dataclass
class LabeledImages:
    """Image paths with their labels: ``targets[i]`` holds the label indices of ``paths[i]``."""

    paths: list[str]
    targets: list[tuple[int, ...]]
    labels: tuple[str, ...]
    multi_label: bool

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        """Images holding each label, in label order."""
        counts = Counter(i for target in self.targets for i in target)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def subset(self, indices: Sequence[int]) -> LabeledImages:
        return LabeledImages(
            [self.paths[i] for i in indices],
            [self.targets[i] for i in indices],
            self.labels,
            self.multi_label,
        )

    def summary(self, name: str = "data") -> str:
        """One line per class: count and share, so an unbalanced or mislabelled set shows before training."""
        kind = "multi-label" if self.multi_label else "multi-class"
        lines = [f"{name}: {len(self)} images, {len(self.labels)} classes ({kind})"]
        total = max(len(self), 1)
        for label, count in self.class_counts().items():
            lines.append(f"  {label:<24} {count:>7}  {100 * count / total:5.1f}%")
        return "\n".join(lines)


def _image_folder(root: Path) -> list[tuple[str, list[str]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (expected one folder of images per class)")
    items, empty = [], []
    for name in classes:
        before = len(items)
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS) and not filename.startswith("."):
                    items.append((str(Path(dirpath) / filename), [name]))
        if len(items) == before:
            empty.append(name)
    if empty:
        raise ValueError(
            f"{root}: class folders without images: {', '.join(empty)} (remove them or add images)"
        )
    return items


def _resolve(reference: str, base: Path, source: Path) -> str:
    """A local file for a path or URL written in ``source``: absolute, relative to it, or a trailing part."""
    parsed = urlparse(reference)
    text = parsed.path if parsed.scheme and len(parsed.scheme) > 1 else reference
    candidates = [Path(text)] if Path(text).is_absolute() else []
    parts = Path(text.lstrip("/")).parts
    candidates += [base.joinpath(*parts[i:]) for i in range(len(parts))]
    candidates += [base / "images" / parts[-1]] if parts else []
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{source}: image {reference!r} not found (looked relative to {base})")


def _split_labels(cell: str, separators: re.Pattern = _LABEL_SEPARATORS) -> list[str]:
    return [label.strip() for label in separators.split(cell) if label.strip()]


def _csv_items(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheet exports start with a BOM
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    separators = _LABEL_SEPARATORS
    if rows and rows[0][0].strip().lower() in _HEADER_NAMES:
        header, rows = rows[0], rows[1:]
        if len(header) > 1 and header[1].strip().lower() == "labels":
            separators = _LIST_SEPARATORS
    items = []
    for line, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise ValueError(f"{path}: row {line} needs a path and a label, got {row}")
        labels = _split_labels(",".join(row[1:]), separators)
        items.append((_resolve(row[0].strip(), path.parent, path), labels))
    return items


def _jsonl_items(path: Path) -> tuple[list[tuple[str, list[str]]], bool]:
    items, any_list = [], False
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {line} is not JSON: {e}") from None
        if not isinstance(record, dict) or "image_url" not in record or "label" not in record:
            raise ValueError(f"{path}: line {line} needs 'image_url' and 'label'")
        label = record["label"]
        any_list |= isinstance(label, list)
        labels = [str(x) for x in label] if isinstance(label, list) else [str(label)]
        items.append((_resolve(str(record["image_url"]), path.parent, path), labels))
    return items, any_list


def load_dataset(
    source: str | os.PathLike, *, labels: Sequence[str] | None = None, multi_label: bool | None = None
) -> LabeledImages:
    """Read a class-per-folder directory, a ``.csv`` or an Azure ``.jsonl`` file.

    ``labels`` fixes the label order (a validation set uses the training set's; unknown labels raise);
    ``multi_label`` None means: multi-label when any item carries several labels or a JSONL label is a list.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    listed = False
    if path.is_dir():
        items = _image_folder(path)
    elif path.suffix.lower() == ".csv":
        items = _csv_items(path)
    elif path.suffix.lower() in (".jsonl", ".json"):
        items, listed = _jsonl_items(path)
    else:
        raise ValueError(f"{path}: expected a folder of class folders, a .csv or a .jsonl file")
    if not items:
        raise ValueError(f"{path} holds no images")
    names = tuple(labels) if labels is not None else tuple(sorted({n for _, ls in items for n in ls}))
    if labels is None and len(names) < 2:
        found = f"{len(names)} class ({', '.join(names)})" if names else "no labels"
        raise ValueError(f"{path}: found {found}; a classifier needs at least 2")
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({n for _, ls in items for n in ls} - set(index))
    if unknown:
        raise ValueError(f"{path} has labels outside the {len(names)} known ones: {', '.join(unknown[:10])}")
    if multi_label is None:
        multi_label = listed or any(len(ls) != 1 for _, ls in items)
    if not multi_label and any(len(ls) != 1 for _, ls in items):
        raise ValueError(f"{path}: some images have several labels or none, but the task is multi-class")
    targets = [tuple(sorted({index[n] for n in ls})) for _, ls in items]
    return LabeledImages([p for p, _ in items], targets, names, multi_label)


def split(data: LabeledImages, fraction: float, seed: int) -> tuple[LabeledImages, LabeledImages]:
    """(train, validation) with ``fraction`` held out: stratified per class when multi-class, seeded."""
    rng = np.random.default_rng(seed)
    if data.multi_label:
        order = rng.permutation(len(data))
        held = set(order[: max(1, round(fraction * len(data)))].tolist())
    else:
        held = set()
        by_class: dict[int, list[int]] = {}
        for i, target in enumerate(data.targets):
            by_class.setdefault(target[0], []).append(i)
        for members in by_class.values():
            take = round(fraction * len(members)) if len(members) > 1 else 0
            held.update(rng.permutation(members)[:take].tolist())
    train = [i for i in range(len(data)) if i not in held]
    val = sorted(held)
    if not train or not val:
        raise ValueError(
            f"a split of {fraction} leaves an empty training or validation set ({len(data)} images)"
        )
    return data.subset(train), data.subset(val)


def target_tensor(target: tuple[int, ...], num_classes: int, multi_label: bool) -> torch.Tensor:
    """A class index (multi-class) or a (num_classes,) float multi-hot vector (multi-label)."""
    if not multi_label:
        return torch.tensor(target[0])
    vector = torch.zeros(num_classes)
    vector[list(target)] = 1.0
    return vector


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one sample of one epoch."""
    return np.random.default_rng([seed, epoch, index])


class TrainImages(Dataset):
    """Decoded, augmented training samples: ``(pixels (3, H, W), target)``; call ``set_epoch`` each epoch."""

    def __init__(
        self,
        data: LabeledImages,
        transform: Callable[[Image.Image, np.random.Generator], torch.Tensor],
        seed: int,
    ) -> None:
        self.data, self.transform, self.seed, self.epoch = data, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode_image(self.data.paths[index])
        pixels = self.transform(image, sample_rng(self.seed, self.epoch, index))
        return pixels, target_tensor(self.data.targets[index], len(self.data.labels), self.data.multi_label)


class EvalImages(Dataset):
    """Decoded samples through the evaluation processor: ``(pixels (3, H, W), target)``."""

    def __init__(self, data: LabeledImages, processor: Callable[[Image.Image], torch.Tensor]) -> None:
        self.data, self.processor = data, processor

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.processor(decode_image(self.data.paths[index]))
        return pixels, target_tensor(self.data.targets[index], len(self.data.labels), self.data.multi_label)

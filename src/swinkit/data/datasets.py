"""Labelled image collections: a class-per-folder tree, a CSV (``path,label``) or an Azure ML JSONL file.

The formats and the multi-label separators are those of ``swinkit.data.records`` (shared with batch).
``load_dataset`` reads any of them into ``LabeledImages`` (paths and label indices); ``split`` holds out a
seeded validation fraction; ``TrainImages`` and ``EvalImages`` are the torch datasets the engine iterates.
Training augmentation draws from a generator seeded by (seed, epoch, index), so every sample of every
epoch is reproducible whatever the number of DataLoader workers.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from swinkit.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from swinkit.data.records import ImageRecord, iter_records, resolve_path

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
_READ_CHECKS = 16  # images decoded before training or evaluation to catch a set of unreadable files
__all__ = ["IMAGE_EXTENSIONS", "EvalImages", "LabeledImages", "TrainImages", "load_dataset", "split"]


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


def _checked_items(records: Iterable[ImageRecord]) -> list[tuple[str, ImageRecord]]:
    """(local file, record) of each record; the first unusable, unlabelled or missing one raises."""
    items = []
    for record in records:
        if record.error is not None:
            raise ValueError(record.error)
        if record.reference is None:
            raise ValueError(f"{record.where}: training and evaluation read image files, not base64 images")
        if not record.labels:
            raise ValueError(f"{record.where}: no label for image {record.reference!r}")
        path = resolve_path(record)
        if path is None:
            raise FileNotFoundError(
                f"{record.where}: image {record.reference!r} not found (looked relative to {record.base})"
            )
        items.append((path, record))
    return items


def _check_label_cells(records: Sequence[ImageRecord]) -> None:
    """Refuse a single-label cell that reads as several labels of other rows (``can carton``)."""
    words = {label for r in records if not r.listed for label in r.labels if not _SPACE.search(label)}
    for record in records:
        if record.listed:
            continue
        for label in record.labels:
            parts = _SPACE.split(label.strip())
            if len(parts) > 1 and all(part in words for part in parts):
                raise ValueError(
                    f"{record.where}: the label {label!r} reads as several labels ({', '.join(parts)} are "
                    "labels of other rows) but a 'label' column holds one label per image; for multi-label "
                    "data head the column 'labels' (space-separated) or separate the labels with ';'"
                )


def load_dataset(
    source: str | os.PathLike, *, labels: Sequence[str] | None = None, multi_label: bool | None = None
) -> LabeledImages:
    """Read a class-per-folder directory, a ``.csv`` or an Azure ``.jsonl`` file (see ``data.records``).

    ``labels`` fixes the label order (a validation set uses the training set's; unknown labels raise);
    ``multi_label`` None means: multi-label when any item carries several labels or its labels are a list.
    FileNotFoundError for a missing source or image, ValueError for anything else unusable.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    checked = _checked_items(iter_records(path, labelled=True))
    if not checked:
        raise ValueError(f"{path} holds no images")
    records = [record for _, record in checked]
    _check_label_cells(records)
    found = {n for r in records for n in r.labels}
    names = tuple(labels) if labels is not None else tuple(sorted(found))
    if labels is None and len(names) < 2:
        shown = f"{len(names)} class ({', '.join(names)})" if names else "no labels"
        raise ValueError(f"{path}: found {shown}; a classifier needs at least 2")
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(found - set(index))
    if unknown:
        raise ValueError(f"{path} has labels outside the {len(names)} known ones: {', '.join(unknown[:10])}")
    if multi_label is None:
        multi_label = any(r.listed or len(r.labels) != 1 for r in records)
    if not multi_label and any(len(r.labels) != 1 for r in records):
        raise ValueError(f"{path}: some images have several labels, but the task is multi-class")
    targets = [tuple(sorted({index[n] for n in r.labels})) for r in records]
    paths = [p for p, _ in checked]
    _check_readable(paths, path)
    return LabeledImages(paths, targets, names, multi_label)


def _check_readable(paths: Sequence[str], source: Path, tries: int = _READ_CHECKS) -> None:
    """Refuse a dataset none of whose images decodes, trying up to ``tries`` spread over it."""
    count = min(tries, len(paths))
    picked = [i * len(paths) // count for i in range(count)]
    errors = []
    for i in picked:
        try:
            decode_image(paths[i]).close()
            return
        except ImageDecodeError as e:
            errors.append(str(e))
    raise ValueError(f"{source}: none of the {len(picked)} images tried could be read (first: {errors[0]})")


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


class AugmentedSet(Dataset):
    """Training samples of ``data`` drawn through ``transform``, with one generator per (seed, epoch, sample):
    the same draws on every rank and after a resume; call ``set_epoch`` each epoch."""

    def __init__(self, data: Any, transform: Callable, seed: int) -> None:
        self.data, self.transform, self.seed, self.epoch = data, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample ``index`` this epoch."""
        return sample_rng(self.seed, self.epoch, index)


class ProcessedSet(Dataset):
    """Evaluation samples of ``data`` through a deterministic ``processor``."""

    def __init__(self, data: Any, processor: Callable[[Image.Image], torch.Tensor]) -> None:
        self.data, self.processor = data, processor

    def __len__(self) -> int:
        return len(self.data)


class TrainImages(AugmentedSet):
    """Decoded, augmented training samples of ``LabeledImages``: ``(pixels (3, H, W), target)``; ``transform``
    maps (image, generator) to pixels."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode_image(self.data.paths[index])
        pixels = self.transform(image, self.rng(index))
        return pixels, target_tensor(self.data.targets[index], len(self.data.labels), self.data.multi_label)


class EvalImages(ProcessedSet):
    """Decoded samples through the evaluation processor: ``(pixels (3, H, W), target)``."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.processor(decode_image(self.data.paths[index]))
        return pixels, target_tensor(self.data.targets[index], len(self.data.labels), self.data.multi_label)

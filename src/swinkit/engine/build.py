"""What image tasks build from a run's config: datasets and loaders, model overrides, the training transform and
the evaluation processor (the exact preprocessing ``swinkit predict`` applies to the saved model)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from swinkit.data.augment import TrainTransform
from swinkit.data.datasets import EvalImages, LabeledImages, TrainImages, load_dataset, split
from swinkit.data.preprocess import ImageProcessor, preprocessing_for
from swinkit.engine.config import TrainConfig
from swinkit.engine.distributed import DistContext, ShardedSampler, eval_shard
from swinkit.loading import describe_source
from swinkit.presets import Preprocessing, SwinConfig

log = logging.getLogger(__name__)


@dataclass
class RunData:
    train: LabeledImages
    val: LabeledImages

    @property
    def labels(self) -> tuple[str, ...]:
        return self.train.labels

    @property
    def multi_label(self) -> bool:
        return self.train.multi_label


def load_run_data(config: TrainConfig) -> RunData:
    """The training set and the explicit or seeded-split validation set, sharing one label order."""
    train = load_dataset(config.data.train, multi_label=config.data.multi_label)
    if config.data.val:
        val = load_dataset(config.data.val, labels=train.labels, multi_label=train.multi_label)
    else:
        train, val = split(train, config.data.val_split, config.run.seed)
    return RunData(train, val)


def model_overrides(config: TrainConfig) -> dict[str, Any]:
    """The ``model`` section's changes to the preset or checkpoint architecture (size, drop path)."""
    overrides: dict[str, Any] = {}
    if config.model.image_size is not None:
        overrides["image_size"] = config.model.image_size
    if config.model.drop_path_rate is not None:
        overrides["drop_path_rate"] = config.model.drop_path_rate
    return overrides


def eval_processor(config: TrainConfig, trunk: SwinConfig) -> ImageProcessor:
    """Evaluation preprocessing at the model's size (its ``trunk``'s), with the run's crop and filter; mean/std
    are those of the pretrained checkpoint's preprocessing (``preprocessing_for``), or the default from scratch."""
    if config.model.pretrained:
        base = preprocessing_for(describe_source(config.model.pretrained, trunk))
    else:
        base = preprocessing_for(trunk)
    size = trunk.image_size
    preprocessing = Preprocessing(
        image_size=(size, size),
        crop_pct=config.data.crop_pct,
        interpolation=config.data.interpolation,
        mean=tuple(base.mean),
        std=tuple(base.std),
    )
    return ImageProcessor.from_preprocessing(preprocessing)


def train_transform(config: TrainConfig, size: int, processor: ImageProcessor) -> TrainTransform:
    a = config.augment
    return TrainTransform(
        size=size,
        scale=a.scale,
        ratio=a.ratio,
        hflip=a.hflip,
        randaugment_ops=a.randaugment_ops,
        randaugment_magnitude=a.randaugment_magnitude,
        randaugment_std=a.randaugment_std,
        random_erasing=a.random_erasing,
        interpolation=config.data.interpolation,
        mean=tuple(processor.mean),
        std=tuple(processor.std),
    )


def train_loader(
    config: TrainConfig, data: LabeledImages, transform: TrainTransform, context: DistContext
) -> tuple[DataLoader, TrainImages, ShardedSampler]:
    """Shuffled, sharded, reproducible loader of the classification training images."""
    dataset = TrainImages(data, transform, config.run.seed)
    loader, sampler = sharded_loader(config, dataset, context)
    return loader, dataset, sampler


def sharded_loader(
    config: TrainConfig,
    dataset: Dataset,
    context: DistContext,
    batches: Callable[[ShardedSampler], Sampler[int]] | None = None,
) -> tuple[DataLoader, Any]:
    """(loader, sampler) of this rank's seeded shuffle of ``dataset``; ``batches`` wraps the sampler (a task's
    own batching rule, e.g. whole batches only). The DataLoader's own generator keeps global RNGs untouched."""
    sampler: Any = ShardedSampler(
        len(dataset), seed=config.run.seed, rank=context.rank, world_size=context.world_size
    )
    if batches is not None:
        sampler = batches(sampler)
    loader = DataLoader(
        dataset,
        batch_size=config.run.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.run.seed),
        pin_memory=context.device.type == "cuda",
    )
    return loader, sampler


def eval_loader(
    data: LabeledImages, processor: ImageProcessor, batch_size: int, num_workers: int, context: DistContext
) -> DataLoader:
    """This rank's shard of ``data`` through the evaluation processor, in order."""
    shard = data.subset(eval_shard(len(data), context))
    return DataLoader(
        EvalImages(shard, processor), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )

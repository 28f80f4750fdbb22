"""One sharded training-loader helper (engine.build.sharded_loader) behind the classification, MIM and
segmentation tasks: the batches, their order and the samplers' lengths are those of the loaders each task
used to build itself (copied below as the reference)."""

from __future__ import annotations

import torch
from segmentation_scenes import write_pairs
from test_pretrain import MICRO, make_images, parse, resolve_config
from torch.utils.data import DataLoader

from swinkit.engine import build
from swinkit.engine.config import TrainConfig, apply_overrides, apply_recipe
from swinkit.engine.distributed import DistContext, ShardedSampler
from swinkit.tasks.masked_image_modeling import MaskedImageModelingTask
from swinkit.tasks.semantic_segmentation import FullBatches, SemanticSegmentationTask

CONTEXTS = (DistContext(), DistContext(rank=1, world_size=2))


def _reference(config, dataset, context, full_batches):
    """The DataLoader set-up the MIM and segmentation tasks wrote out before the shared helper."""
    sampler = ShardedSampler(
        len(dataset), seed=config.run.seed, rank=context.rank, world_size=context.world_size
    )
    if full_batches:
        sampler = FullBatches(sampler, config.run.batch_size)
    loader = DataLoader(
        dataset, batch_size=config.run.batch_size, sampler=sampler, num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.run.seed), pin_memory=False,
    )  # fmt: skip
    return loader, sampler


def _epochs(loader, dataset, sampler):
    out = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=epoch)
        out.append((len(sampler), list(iter(sampler)), [list(batch) for batch in loader]))
    return out


def _assert_same(ours, theirs):
    for (n, order, batches), (n_ref, order_ref, batches_ref) in zip(ours, theirs, strict=True):
        assert (n, order) == (n_ref, order_ref)
        assert len(batches) == len(batches_ref) > 0
        for batch, ref in zip(batches, batches_ref):
            assert all(torch.equal(a, b) for a, b in zip(batch, ref, strict=True))


def _check(task, full_batches):
    data = task.load_data()
    processor = task.processor(task.build_model(data))
    for context in CONTEXTS:
        built = task.train_loader(data, processor, context)
        assert isinstance(built.sampler, FullBatches) == full_batches
        ours = _epochs(built.loader, built.dataset, built.sampler)
        loader, sampler = _reference(task.config, built.dataset, context, full_batches)
        _assert_same(ours, _epochs(loader, built.dataset, sampler))


def test_the_segmentation_loader_is_unchanged_and_keeps_whole_batches(tmp_path):
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    config = apply_overrides(config, {
        "task": "semantic_segmentation", "data.train": str(write_pairs(tmp_path / "seg", 9)), "run.output": "x",
        "model.preset": "upernet_swin_micro", "seg.crop_size": 32, "seg.scale": "64,32", "run.batch_size": 2,
        "data.val_split": 0.2,
    })  # fmt: skip
    _check(SemanticSegmentationTask(config), full_batches=True)


def test_the_mim_loader_is_unchanged(tmp_path):
    args = ["--data", str(make_images(tmp_path / "mim", 10)), "--output", str(tmp_path / "run"), *MICRO]
    config = resolve_config(parse([*args, "--batch-size", "3"]))
    _check(MaskedImageModelingTask(config), full_batches=False)


def test_sharded_loader_wraps_the_sampler_and_shards_by_rank():
    config = apply_overrides(TrainConfig(), {"run.batch_size": 2, "data.train": "x", "run.output": "x"})
    dataset = list(range(7))
    loader, sampler = build.sharded_loader(config, dataset, DistContext(rank=1, world_size=2))
    assert isinstance(sampler, ShardedSampler) and len(sampler) == 4
    _, whole = build.sharded_loader(config, dataset, DistContext(), lambda s: FullBatches(s, 2))
    assert len(whole) == 6 and sum(len(b) for b in loader) == 4

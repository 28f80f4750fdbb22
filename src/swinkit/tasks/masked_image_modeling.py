"""Masked image modeling (SimMIM) on unlabelled images: any folder tree, or the paths of a CSV/JSONL set.

Training masks each image with the official SimMIM mask generator (``mim.mask_patch_size``, ``mim.mask_ratio``)
drawn from the sample's (seed, epoch, index) generator; the model computes the masked L1 loss. Evaluation uses
the evaluation preprocessing and a fixed mask per held-out image (seeded by ``run.seed`` and the image's index),
so the primary metric, ``masked_l1`` (lower is better), compares epochs and runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swinkit.checkpoint_io import atomic_write_json
from swinkit.data.augment import TrainTransform
from swinkit.data.datasets import IMAGE_EXTENSIONS, load_dataset, sample_rng
from swinkit.data.decode import decode_image
from swinkit.data.masking import MaskGenerator
from swinkit.engine import build
from swinkit.engine.distributed import DistContext, all_reduce_sum, eval_shard
from swinkit.layouts.hf import mim_config_to_hf
from swinkit.models.mim import (
    SwinForMaskedImageModeling,
    build_mim_model,
    load_mim,
    normalized_targets,
    save_mim_pretrained,
)
from swinkit.presets import MIM_PRESETS, get_mim_preset, get_preset
from swinkit.sources import DESCRIPTION_KEYS
from swinkit.tasks.base import Evaluator, Task, TrainLoader


@dataclass
class MimConfig:
    """The masked-image-modeling task's own config section, ``mim`` (SimMIM's mask and crop settings)."""

    mask_patch_size: int = 32  # side of a masked square, in pixels (a multiple of the model's patch)
    mask_ratio: float = 0.6  # fraction of mask squares masked per image
    scale: tuple[float, float] = (0.67, 1.0)  # random resized crop: area fraction
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # random resized crop: aspect ratio
    hflip: float = 0.5  # probability of a horizontal flip
    interpolation: str = "bilinear"  # the crop's filter (torchvision's RandomResizedCrop default, as SimMIM)
    norm_target_patch: int = 0  # 0: raw-pixel targets; odd k: standardised over k x k (SwinV2 SimMIM: 47)


@dataclass
class UnlabeledImages:
    """Image paths; labels, if the source has any, are ignored."""

    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> UnlabeledImages:
        return UnlabeledImages([self.paths[i] for i in indices])

    def summary(self, name: str = "data") -> str:
        return f"{name}: {len(self)} unlabelled images"


@dataclass
class MimData:
    train: UnlabeledImages
    val: UnlabeledImages


def load_images(source: str) -> UnlabeledImages:
    """Every image under a folder tree (sorted), or the image paths of a CSV or JSONL set."""
    root = Path(source)
    if root.is_dir():
        paths = sorted(
            str(p)
            for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not paths:
            raise ValueError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in any sub-folder")
        return UnlabeledImages(paths)
    return UnlabeledImages(list(load_dataset(source).paths))


def split_images(
    data: UnlabeledImages, fraction: float, seed: int
) -> tuple[UnlabeledImages, UnlabeledImages]:
    """(train, validation): a seeded random ``fraction`` held out, at least one image each."""
    if len(data) < 2:
        raise ValueError(f"{len(data)} image(s) cannot be split into a training and a validation set")
    order = np.random.default_rng(seed).permutation(len(data))
    held = min(max(1, round(fraction * len(data))), len(data) - 1)
    return data.subset(sorted(order[held:].tolist())), data.subset(sorted(order[:held].tolist()))


class MaskedImages(Dataset):
    """``(pixels (3, H, W), mask (H/p, W/p))`` samples; a sample's crop and mask are drawn from ``rng_of(i)``.

    Training: ``transform(image, rng)`` augments and the epoch changes the draws. Evaluation (``transform``
    None): ``processor(image)`` and a mask fixed by (seed, index in the full set).
    """

    def __init__(
        self, data: UnlabeledImages, masks: dict[str, Any], seed: int, transform=None, processor=None
    ):
        self.data, self.masks, self.seed, self.epoch = data, masks, seed, 0
        self.transform, self.processor = transform, processor
        self.indices = list(range(len(data)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, indices: Sequence[int]) -> MaskedImages:
        """The samples at ``indices``, keeping each one's mask (its index in the full set)."""
        part = MaskedImages(self.data, self.masks, self.seed, self.transform, self.processor)
        part.indices = [self.indices[i] for i in indices]
        return part

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[i]
        image = decode_image(self.data.paths[index])
        rng = sample_rng(self.seed, self.epoch, index)
        pixels = self.transform(image, rng) if self.transform is not None else self.processor(image)
        mask = MaskGenerator(rng=rng, **self.masks)()  # (H/p, W/p)
        return pixels, torch.from_numpy(mask)


def masked_error_sums(batch: tuple[torch.Tensor, torch.Tensor], reconstruction: torch.Tensor, patch: int):
    """(summed absolute error over masked pixels and channels, masked pixels * channels), float64."""
    pixels, mask = batch
    pixel_mask = mask.repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1)  # (B, 1, H, W)
    error = (reconstruction.float() - pixels).abs() * pixel_mask  # (B, C, H, W)
    return error.sum().double(), pixel_mask.sum().double() * pixels.shape[1]


GRID_IMAGES = 6  # held-out images shown in the reconstruction grid


@dataclass(frozen=True)
class GridTarget:
    """How the reconstruction grid de-normalises the evaluation pixels (the preprocessing's mean and std)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class MaskedL1Evaluator(Evaluator):
    """The masked L1 of the whole held-out set: all masked pixels of all ranks weigh alike.

    It also keeps the first ``keep`` images it sees (pixels, mask, reconstruction, on the CPU) for the
    reconstruction grid, which the task's reports draw (``write_grid``); ``compute()`` only computes.
    """

    def __init__(
        self,
        patch_size: int,
        context: DistContext,
        keep: int = 0,
        grid: GridTarget | None = None,
        norm_target_patch: int = 0,
    ) -> None:
        self.patch_size, self.context, self.keep, self.grid = patch_size, context, keep, grid
        self.norm_target_patch = norm_target_patch  # the model's target rule: the L1 is against that target
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.context.device)  # (error, pixels, images)
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def process(self, batch: tuple[torch.Tensor, torch.Tensor], outputs: Any) -> None:
        pixels, mask = batch
        if self.norm_target_patch:
            pixels = normalized_targets(pixels, self.norm_target_patch)
        error, count = masked_error_sums((pixels, mask), outputs.reconstruction, self.patch_size)
        self.sums += torch.stack([error, count, torch.tensor(float(batch[0].shape[0]), dtype=torch.float64)])
        room = self.keep - sum(len(k[0]) for k in self.kept)
        if room > 0:
            pixels, mask = batch
            kept = (pixels[:room], mask[:room], outputs.reconstruction[:room].float())
            self.kept.append(tuple(t.detach().cpu() for t in kept))

    def samples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(pixels (K, 3, H, W), mask (K, H/p, W/p), reconstruction (K, 3, H, W)) of the kept images."""
        if not self.kept:
            return None
        return tuple(torch.cat(parts) for parts in zip(*self.kept))

    def write_grid(self, path: str | os.PathLike) -> Path | None:
        """The reconstruction grid of the kept images at ``path`` (None when none were kept)."""
        from swinkit.engine.reconstruction import write_grid

        samples = self.samples()
        if samples is None or self.grid is None:
            return None
        return write_grid(*samples, self.patch_size, self.grid.mean, self.grid.std, path)

    def compute(self) -> dict[str, Any]:
        error, count, images = all_reduce_sum(self.sums, self.context).tolist()
        value = error / max(count, 1.0)
        return {"loss": value, "masked_l1": value, "num_samples": int(images)}


def mim_model(config: Any) -> SwinForMaskedImageModeling:
    """A SimMIM model with the run's target rule (``mim.norm_target_patch``)."""
    k = config.task_options.norm_target_patch
    if k < 0 or (k and k % 2 == 0):
        raise ValueError(f"mim.norm_target_patch must be 0 (raw pixels) or odd (e.g. 47), got {k}")
    model = _mim_trunk_model(config)
    model.norm_target_patch = k
    return model


def _mim_trunk_model(config: Any) -> SwinForMaskedImageModeling:
    """A SimMIM model: loaded from ``model.pretrained``, or fresh from a SimMIM or classification preset."""
    overrides = build.model_overrides(config)
    torch.manual_seed(config.run.seed)
    if config.model.pretrained:
        if overrides:
            raise ValueError(
                "model.image_size and model.drop_path_rate cannot change a pretrained SimMIM model yet; "
                "leave them unset to keep the checkpoint's"
            )
        return load_mim(config.model.pretrained, preset=config.model.preset)
    name = config.model.preset
    trunk = get_mim_preset(name).config if name in MIM_PRESETS else get_preset(name).config
    return build_mim_model(trunk.replace(**overrides))


class MaskedImageModelingTask(Task):
    """SimMIM pretraining: reconstruct masked patches of unlabelled images; ``masked_l1`` on held-out images."""

    name = "masked_image_modeling"
    higher_is_better = False
    default_recipe = "simmim"
    options_section = "mim"
    options_class = MimConfig
    primary_metric = "masked_l1"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std)

    @classmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        return any(a.endswith("ForMaskedImageModeling") for a in config_dict.get("architectures") or [])

    @classmethod
    def check_preset(cls, name: str) -> None:
        """A SimMIM preset (``swin_base_simmim_window6_192``...) or any classification preset's trunk."""
        if name not in MIM_PRESETS:
            try:
                get_preset(name)
            except ValueError:
                raise ValueError(
                    f"unknown preset {name!r} for masked image modeling; SimMIM presets: "
                    f"{', '.join(sorted(MIM_PRESETS))} (or any classification preset's trunk)"
                ) from None

    def load_data(self) -> MimData:
        cfg = self.config
        train = load_images(cfg.data.train)
        if cfg.data.val:
            return MimData(train, load_images(cfg.data.val))
        return MimData(*split_images(train, cfg.data.val_split, cfg.run.seed))

    def build_model(self, data: MimData) -> SwinForMaskedImageModeling:
        model = mim_model(self.config)
        size, patch = model.config.image_size, model.config.patch_size
        m = self.config.task_options
        self.masks = dict(
            input_size=size,
            mask_patch_size=m.mask_patch_size,
            model_patch_size=patch,
            mask_ratio=m.mask_ratio,
        )
        MaskGenerator(**self.masks)  # the mask settings fit this model, or a ValueError says why
        return model

    def processor(self, model: nn.Module) -> Any:
        return build.eval_processor(self.config, model.config)

    def train_loader(self, data: MimData, processor: Any, context: DistContext) -> TrainLoader:
        cfg, m = self.config, self.config.task_options
        transform = TrainTransform(
            size=self.masks["input_size"], scale=m.scale, ratio=m.ratio, hflip=m.hflip, randaugment_ops=0,
            random_erasing=0.0, interpolation=m.interpolation, mean=tuple(processor.mean),
            std=tuple(processor.std),
        )  # fmt: skip
        dataset = MaskedImages(data.train, self.masks, cfg.run.seed, transform=transform)
        loader, sampler = build.sharded_loader(cfg, dataset, context)
        return TrainLoader(loader, dataset, sampler)

    def eval_loader(self, data: Any, processor: Any, batch_size: int, context: DistContext) -> DataLoader:
        self.normalisation = (tuple(processor.mean), tuple(processor.std))
        full = MaskedImages(data, self.masks, self.config.run.seed, processor=processor)
        shard = full.shard(eval_shard(len(full), context))
        return DataLoader(
            shard, batch_size=batch_size, shuffle=False, num_workers=self.config.data.num_workers
        )

    def losses(
        self,
        model: nn.Module,
        batch: Any,
        rng: np.random.Generator,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        pixels, mask = batch
        with autocast:
            output = model(pixels, mask)
        return {"loss_mim": output.loss.float()}

    def infer(self, model: nn.Module, batch: Any) -> Any:
        return model(*batch)

    def evaluator(self, context: DistContext) -> MaskedL1Evaluator:
        """The masked L1; on the main rank it also keeps the first held-out images, with their fixed masks,
        for the reconstruction grids of the reports."""
        patch, k = self.masks["model_patch_size"], self.config.task_options.norm_target_patch
        if not context.is_main or self.normalisation is None or k:  # no picture of standardised targets
            return MaskedL1Evaluator(patch, context, norm_target_patch=k)
        return MaskedL1Evaluator(patch, context, GRID_IMAGES, GridTarget(*self.normalisation))

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return f"masked_l1 {metrics['masked_l1']:.4f}"

    def write_epoch_report(self, directory: str | os.PathLike, epoch: int, evaluator: Evaluator) -> dict:
        """The epoch's reconstruction grid, ``plots/reconstruction_epochN.png``, from its evaluator."""
        path = Path(directory) / "plots" / f"reconstruction_epoch{epoch}.png"
        grid = evaluator.write_grid(path) if isinstance(evaluator, MaskedL1Evaluator) else None
        return {"reconstruction": grid} if grid is not None else {}

    def write_report(
        self, directory: str | os.PathLike, report: dict[str, Any], evaluator: Evaluator
    ) -> dict:
        from swinkit.engine import plots  # matplotlib is imported only when plots are drawn

        directory = Path(directory)
        written = {"metrics": directory / "metrics.json"}
        atomic_write_json(written["metrics"], report)
        if report.get("history"):
            curves = directory / "plots" / "curves.png"
            written["curves"] = plots.plot_history(report["history"], self.primary_metric, curves)
        if isinstance(evaluator, MaskedL1Evaluator):  # the saved (best) model's reconstructions
            grid = evaluator.write_grid(directory / "plots" / "reconstruction.png")
            if grid is not None:
                written["reconstruction"] = grid
        return written

    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        save_mim_pretrained(model, directory)
        atomic_write_json(Path(directory) / "preprocessor_config.json", processor.to_preprocessor_config())

    def description(self, model: nn.Module, processor: Any) -> dict[str, str]:
        config = json.dumps(mim_config_to_hf(model.config, model.encoder_stride))
        return {
            DESCRIPTION_KEYS[0]: config,
            DESCRIPTION_KEYS[1]: json.dumps(processor.to_preprocessor_config()),
        }

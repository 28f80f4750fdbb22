"""Semantic segmentation with UPerNet + Swin, trained and evaluated as mmsegmentation 1.x does.

Data: ``swinkit.data.segmentation`` (ADE20K tree, image/mask folders, JSONL). Training: mmseg's ADE20K
pipeline (random resize, crop with ``cat_max_ratio``, flip, photometric distortion, padding) and the model's
losses (cross entropy with ignore index + 0.4 auxiliary). Evaluation: mmseg's ``IoUMetric`` on predictions
resized back to each image's original size. Export: transformers' ``UperNetForSemanticSegmentation`` folder.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from swinkit.checkpoint_io import atomic_write_json
from swinkit.data.segmentation import (
    IGNORE_INDEX,
    SegmentationEvalSet,
    SegmentationProcessor,
    SegmentationSet,
    SegmentationTrainSet,
    collate_pairs,
    is_ade20k,
    load_segmentation,
    read_classes,
)
from swinkit.data.segmentation_transforms import SegmentationTrainTransform
from swinkit.engine import build
from swinkit.engine.config import TrainConfig
from swinkit.engine.distributed import DistContext, ShardedSampler, all_reduce_sum, eval_shard
from swinkit.evaluation.segmentation import (
    areas_to_metrics,
    intersect_and_union,
    per_class_rows,
    plot_class_iou,
    report_text,
)
from swinkit.layouts.heads import hf_upernet
from swinkit.models.segmentation.checkpoints import save_hf
from swinkit.models.segmentation.config import SEGMENTATION_PRESETS, get_segmentation_preset
from swinkit.models.segmentation.upernet import SYNC_BN_DEVICES, UperNet, output_losses, sync_head_norms
from swinkit.sources import DESCRIPTION_KEYS, PREPROCESSOR_FILE
from swinkit.tasks.base import Evaluator, Task, TaskPredictor, TrainLoader, run_by_shape
from swinkit.tasks.segmentation_model import (
    UPERNET_ARCHITECTURE,
    fit_classes,
    is_upernet,
    load_upernet,
    preset_upernet,
)

log = logging.getLogger(__name__)


def upernet_description(model: UperNet, processor: SegmentationProcessor) -> dict[str, str]:
    """The transformers config.json of the UperNet and its preprocessing, as JSON strings (what makes a
    checkpoint file load as exactly this model)."""
    return {
        DESCRIPTION_KEYS[0]: json.dumps(hf_upernet.config_to_hf(model.config)),
        DESCRIPTION_KEYS[1]: json.dumps(processor.to_preprocessor_config()),
    }


def export_upernet(model: UperNet, directory: str | os.PathLike, processor: SegmentationProcessor) -> None:
    """transformers' UperNet folder (config.json, model.safetensors carrying swinkit's description) and
    preprocessor_config.json, which transformers' AutoImageProcessor and ``swinkit predict`` read."""
    save_hf(model, directory, metadata=upernet_description(model, processor))
    atomic_write_json(Path(directory) / PREPROCESSOR_FILE, processor.to_preprocessor_config())


def whole_inference(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """mmseg's ``mode='whole'``: (B, K, h, w) logits of (B, 3, h, w) pixels in one pass, at the input size.
    The evaluation's one inference call (slide or multi-scale + flip inference replace it)."""
    return model(pixels, auxiliary=False).logits


def logits_at_label_size(
    model: nn.Module,
    pixels: Sequence[torch.Tensor],
    sizes: Sequence[tuple[int, int]],
    inference: Callable[[nn.Module, torch.Tensor], torch.Tensor] = whole_inference,
) -> list[torch.Tensor]:
    """(K, H, W) logits of each (3, h, w) image resized bilinearly to its original ``sizes`` (H, W), as
    mmseg's ``postprocess_result``; images of one shape run as one batch."""
    logits = run_by_shape(pixels, lambda batch: list(inference(model, batch)))
    align = _unwrap(model).config.align_corners
    return [
        F.interpolate(lg[None].float(), size=tuple(size), mode="bilinear", align_corners=align)[0]
        for lg, size in zip(logits, sizes, strict=True)
    ]


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@dataclass
class SegmentationConfig:
    """The semantic segmentation task's data and pipeline (mmseg's ADE20K settings)(YAML ``seg:``, ``--set seg.KEY=...``)."""

    crop_size: int | None = None  # training crop side; None: the preset's (512; 64 for upernet_swin_micro)
    scale: tuple[int, int] = (2048, 512)  # RandomResize scale (long, short bound) before the ratio
    ratio_range: tuple[float, float] = (0.5, 2.0)  # RandomResize ratio range
    cat_max_ratio: float = 0.75  # RandomCrop: redraw while one class covers this fraction of the crop
    hflip: float = 0.5  # probability of a horizontal flip
    photometric: bool = True  # PhotoMetricDistortion (brightness, contrast, saturation, hue)
    test_scale: tuple[int, int] = (2048, 512)  # evaluation: keep-ratio resize into this scale
    reduce_zero_label: bool | None = None  # 0 is "other" (ignored), k -> k - 1; None: True for ADE20K
    classes: str | None = (
        None  # classes.txt or comma-separated names; None: the data's classes.txt or model's
    )
    val_interval: int | None = None  # iterations between validations (mmseg 160k: 16000); None: epoch ends


class SegmentationEvaluator(Evaluator):
    """IoUMetric over every rank's images, and the validation cross entropy (mean over labelled pixels).

    ``process(batch, outputs)``: ``batch`` = (pixels, labels) lists, ``outputs`` the (K, H, W) logits of each
    image at its label map's size.
    """

    def __init__(
        self, classes: Sequence[str], context: DistContext, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.classes, self.context, self.ignore_index = tuple(classes), context, ignore_index
        self.reset()

    def reset(self) -> None:
        device = self.context.device
        self.areas = torch.zeros(4, len(self.classes), dtype=torch.float64, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # (summed CE, labelled pixels, images)

    def process(self, batch: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]], outputs: Any) -> None:
        for logits, label in zip(outputs, batch[1], strict=True):
            label = label.to(logits.device).long()
            self.areas += intersect_and_union(logits.argmax(0), label, len(self.classes), self.ignore_index)
            loss = F.cross_entropy(
                logits.float()[None], label[None], ignore_index=self.ignore_index, reduction="sum"
            )
            labelled = (label != self.ignore_index).sum()
            self.sums += torch.stack(
                [loss.double(), labelled.double(), torch.ones((), device=label.device).double()]
            )

    def compute(self) -> dict[str, Any]:
        areas = all_reduce_sum(self.areas, self.context)
        loss, labelled, images = all_reduce_sum(self.sums, self.context).tolist()
        metrics = areas_to_metrics(areas)
        return {
            "loss": loss / max(labelled, 1.0),
            "aAcc": metrics["aAcc"],
            "mIoU": metrics["mIoU"],
            "mAcc": metrics["mAcc"],
            "num_samples": int(images),
            "per_class": per_class_rows(metrics, self.classes),
        }


class FullBatches(Sampler[int]):
    """A ``ShardedSampler`` cut to whole batches: UPerNet's BatchNorm after the 1x1 pyramid pooling cannot
    train on a batch of one image, so the last incomplete batch of an epoch is left out (as mmseg's
    infinite sampler never yields one)."""

    def __init__(self, sampler: ShardedSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        if sampler.shard_length() < batch_size:
            raise ValueError(
                f"{sampler.shard_length()} training images per process are fewer than one batch of {batch_size}"
            )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip)

    def shard_length(self) -> int:
        return self.sampler.shard_length() // self.batch_size * self.batch_size

    def __len__(self) -> int:
        return max(self.shard_length() - self.sampler.skip, 0)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), len(self))


@dataclass
class SegmentationData:
    train: SegmentationSet
    val: SegmentationSet


def split_pairs(data: SegmentationSet, fraction: float, seed: int) -> tuple[SegmentationSet, SegmentationSet]:
    """(train, validation): a seeded random ``fraction`` of the pairs held out, at least one each."""
    if len(data) < 2:
        raise ValueError(f"{len(data)} image(s) cannot be split into a training and a validation set")
    order = np.random.default_rng(seed).permutation(len(data))
    held = min(max(1, round(fraction * len(data))), len(data) - 1)
    return data.subset(sorted(order[held:].tolist())), data.subset(sorted(order[:held].tolist()))


def parse_classes(value: str) -> tuple[str, ...]:
    """``seg.classes``: a classes.txt file (one name a line) or comma-separated names."""
    path = Path(value)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        names = value.split(",")
    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2:
        raise ValueError(f"seg.classes names {len(names)} class(es); segmentation needs at least 2")
    return tuple(names)


class SemanticSegmentationTask(Task):
    """Per-pixel classification of images into the classes of the data; primary metric mIoU."""

    name = "semantic_segmentation"
    higher_is_better = True
    primary_metric = "mIoU"
    default_recipe = "mmseg"  # swinkit train --task semantic_segmentation starts from RECIPES["mmseg"]
    options_section = "seg"
    options_class = SegmentationConfig

    def __init__(self, config: TrainConfig, classes: Sequence[str] = ()) -> None:
        super().__init__(config)
        self.classes = tuple(classes)
        self.saved: UperNet | None = None  # a pretrained whole UperNet, read once by load_data
        self.inference = whole_inference  # (model, (B, 3, h, w) pixels) -> logits; evaluate_saved may swap it

    @classmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        return UPERNET_ARCHITECTURE in (config_dict.get("architectures") or [])

    @classmethod
    def check_preset(cls, name: str) -> None:
        """A segmentation preset (``upernet_swin_tiny_patch4_window7_224_1k_ade20k_512``, ``upernet_swin_micro``...)."""
        if name not in SEGMENTATION_PRESETS:
            import difflib

            close = difflib.get_close_matches(name, SEGMENTATION_PRESETS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown preset {name!r} for semantic segmentation{hint} (see `swinkit models`: the upernet_* presets)"
            )

    def _classes(self) -> tuple[str, ...]:
        """seg.classes, else the data's classes.txt, else the pretrained UperNet's or the preset's labels."""
        cfg = self.config
        if cfg.task_options.classes:
            return parse_classes(cfg.task_options.classes)
        found = read_classes(cfg.data.train)
        if found is not None:
            return found
        if self.saved is not None:
            return self.saved.config.label_names
        if cfg.model.preset:
            return get_segmentation_preset(cfg.model.preset).config.label_names
        raise ValueError(
            f"no class names: put a classes.txt (one name a line) in {cfg.data.train} or pass --set seg.classes=..."
        )

    def _pairs(self, source: str, classes: tuple[str, ...], split: str) -> SegmentationSet:
        return load_segmentation(
            source, classes, reduce_zero=self.config.task_options.reduce_zero_label, split=split
        )

    def load_data(self) -> SegmentationData:
        cfg = self.config
        if cfg.model.pretrained and is_upernet(cfg.model.pretrained):
            self.saved, _ = load_upernet(cfg.model.pretrained)
        self.classes = self._classes()
        train = self._pairs(cfg.data.train, self.classes, "training")
        if cfg.data.val:
            return SegmentationData(train, self._pairs(cfg.data.val, self.classes, "validation"))
        if is_ade20k(Path(cfg.data.train)) and (Path(cfg.data.train) / "images" / "validation").is_dir():
            return SegmentationData(train, self._pairs(cfg.data.train, self.classes, "validation"))
        return SegmentationData(*split_pairs(train, cfg.data.val_split, cfg.run.seed))

    def build_model(self, data: SegmentationData) -> UperNet:
        cfg = self.config
        torch.manual_seed(cfg.run.seed)
        if self.saved is not None:
            model = fit_classes(self.saved, self.classes).train()
        elif not cfg.model.preset:
            raise ValueError(
                "a Swin backbone checkpoint needs --preset NAME (an upernet_* preset) for the heads"
            )
        else:
            model = preset_upernet(
                cfg.model.preset, self.classes, cfg.model.pretrained, cfg.model.drop_path_rate
            )
        self.crop_size = cfg.task_options.crop_size or (
            get_segmentation_preset(cfg.model.preset).crop_size if cfg.model.preset else 512
        )
        return model

    @property
    def val_interval(self) -> int | None:
        """``seg.val_interval``: mmseg's iteration-based runs validate every ``val_interval`` iterations."""
        return self.config.task_options.val_interval

    def distributed_model(self, model: nn.Module, context: DistContext) -> nn.Module:
        """Under torchrun the heads' BatchNorm becomes SyncBN, as mmseg's configs; torch's SyncBatchNorm runs
        on CUDA (XPU, HPU) only, so CPU processes keep BatchNorm with their own batch statistics (logged)."""
        if not context.distributed:
            return model
        if context.device.type not in SYNC_BN_DEVICES:
            log.warning(
                "SyncBN needs CUDA (torch's SyncBatchNorm refuses %s tensors): on %d CPU processes each "
                "normalises the heads with its own batch of %d images",
                context.device.type, context.world_size, self.config.run.batch_size,
            )  # fmt: skip
            return model
        return sync_head_norms(model)

    def processor(self, model: nn.Module) -> SegmentationProcessor:
        """mmseg's test pipeline at ``seg.test_scale``; mean/std are SegDataPreProcessor's."""
        reduce = self.config.task_options.reduce_zero_label
        if reduce is None:
            reduce = is_ade20k(Path(self.config.data.train))
        return SegmentationProcessor(scale=self.config.task_options.test_scale, reduce_zero_label=reduce)

    def train_transform(self, processor: SegmentationProcessor) -> SegmentationTrainTransform:
        s = self.config.task_options
        return SegmentationTrainTransform(
            crop_size=self.crop_size, scale=s.scale, ratio_range=s.ratio_range, cat_max_ratio=s.cat_max_ratio,
            flip=s.hflip, photometric=s.photometric, mean=processor.mean, std=processor.std,
        )  # fmt: skip

    def train_loader(self, data: SegmentationData, processor: Any, context: DistContext) -> TrainLoader:
        cfg = self.config
        if cfg.run.batch_size < 2:
            raise ValueError(
                "semantic segmentation trains on at least 2 images per batch: UPerNet's BatchNorm after the "
                "1x1 pyramid pooling has a single value per channel for one image"
            )
        dataset = SegmentationTrainSet(data.train, self.train_transform(processor), cfg.run.seed)
        loader, sampler = build.sharded_loader(
            cfg, dataset, context, lambda shards: FullBatches(shards, cfg.run.batch_size)
        )
        return TrainLoader(loader, dataset, sampler)

    def eval_loader(self, data: Any, processor: Any, batch_size: int, context: DistContext) -> DataLoader:
        shard = data.subset(eval_shard(len(data), context))
        return DataLoader(
            SegmentationEvalSet(shard, processor),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.config.data.num_workers,
            collate_fn=collate_pairs,
        )

    def losses(
        self,
        model: nn.Module,
        batch: Any,
        rng: np.random.Generator,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        """``UperNet.losses``: cross entropy with ignore index 255 and the 0.4-weighted auxiliary loss."""
        pixels, labels = batch
        with autocast:
            output = model(pixels)
        return output_losses(_unwrap(model).config, output, labels)

    def infer(self, model: nn.Module, batch: Any) -> list[torch.Tensor]:
        pixels, labels = batch
        return logits_at_label_size(model, pixels, [tuple(lab.shape) for lab in labels], self.inference)

    def evaluator(self, context: DistContext) -> SegmentationEvaluator:
        return SegmentationEvaluator(self.classes, context)

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return f"mIoU {metrics['mIoU']:.4f}  mAcc {metrics['mAcc']:.4f}  aAcc {metrics['aAcc']:.4f}"

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def write_report(
        self, directory: str | os.PathLike, report: dict[str, Any], evaluator: Evaluator
    ) -> dict[str, Path]:
        """metrics.json, the curves over epochs and the per-class IoU bars (``plots/class_iou.png``)."""
        from swinkit.engine import plots  # matplotlib is imported only when plots are drawn

        directory = Path(directory)
        written = {"metrics": directory / "metrics.json"}
        atomic_write_json(written["metrics"], report)
        if report.get("history"):
            curves = directory / "plots" / "curves.png"
            written["curves"] = plots.plot_history(report["history"], self.primary_metric, curves)
        written["class_iou"] = plot_class_iou(report["per_class"], directory / "plots" / "class_iou.png")
        return written

    def description(self, model: nn.Module, processor: Any) -> dict[str, str]:
        return upernet_description(model, processor)

    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        export_upernet(model, directory, processor)

    @classmethod
    def predictor(
        cls,
        source: str | os.PathLike,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        top_k: int | None = None,
        threshold: float | None = None,
        mode: str = "whole",
        tta: bool = False,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
    ) -> TaskPredictor:
        """The segmentation predictor of a saved UperNet (``swinkit.tasks.segmentation_predict``): ``mode``
        "whole" or "slide", ``tta`` mmseg's multi-scale + flip testing, the network on ``runtime`` at
        ``precision`` (torch, openvino, onnxruntime; fp32, bf16, int8)."""
        from swinkit.tasks.segmentation_predict import segmentation_predictor

        return segmentation_predictor(
            source,
            device=device,
            batch_size=batch_size,
            top_k=top_k,
            threshold=threshold,
            mode=mode,
            tta=tta,
            runtime=runtime,
            precision=precision,
            prepack=prepack,
        )

    @classmethod
    def report_text(cls, report: dict[str, Any]) -> str:
        return report_text(report)

    @classmethod
    def evaluate_saved(
        cls,
        source: str | os.PathLike,
        data: str | os.PathLike,
        *,
        output: str | os.PathLike | None = None,
        batch_size: int = 32,
        threshold: float = 0.5,
        num_workers: int = 0,
        device: str = "cpu",
        mode: str = "whole",
        tta: bool = False,
    ) -> dict[str, Any]:
        """aAcc, mIoU, mAcc and per-class IoU/Acc of a saved UperNet on ``data`` (an ADE20K tree's
        validation split, an images/ + masks/ folder or a JSONL) with ``mode`` "whole" or "slide" (mmseg's
        512 crops, stride 341) inference, and with ``tta`` mmseg's multi-scale + flip views
        (``swinkit.tasks.segmentation_predict``; images then go to the predictor at their original size).
        Label maps are read with reduce_zero_label for an ADE20K tree, else as the model's training data was."""
        from swinkit.engine.evaluation import run_evaluation
        from swinkit.models.segmentation.inference import InferenceSettings
        from swinkit.tasks.segmentation_predict import SegmentationPredictor, original_pixels

        model, processor = load_upernet(source)
        config = TrainConfig()
        config.data.num_workers = num_workers
        task = cls(config, classes=model.config.label_names)
        ade20k = is_ade20k(Path(data))  # its validation split, label 0 ignored; else as the model trained
        split, reduce = ("validation", True) if ade20k else ("training", processor.reduce_zero_label)
        pairs = load_segmentation(data, task.classes, reduce_zero=reduce, split=split)
        context = DistContext(device=torch.device(device))
        model = model.to(context.device)
        if mode != "whole" or tta:
            predictor = SegmentationPredictor(
                model, processor, device=device, settings=InferenceSettings(mode), tta=tta
            )
            task.inference, processor = predictor.evaluation_logits, original_pixels
        loader = task.eval_loader(pairs, processor, batch_size, context)
        evaluator = task.evaluator(context)
        metrics = run_evaluation(model, loader, task, evaluator, context)
        report = {"primary_metric": task.primary_metric, **task.report_fields(model), **metrics}
        if output is not None:
            task.write_report(output, report, evaluator)
        return report

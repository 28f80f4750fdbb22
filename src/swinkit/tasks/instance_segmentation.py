"""Instance segmentation (Mask R-CNN) and object detection (Faster R-CNN) with a Swin backbone, as two tasks.

Inference side: a saved detector (``config.json`` with ``model_type`` ``swinkit_detection``; its
``architectures`` entry tells the two apart) runs through ``InstancePredictor`` in ``swinkit predict``, ``batch``
and ``serve`` (Azure ML ``image-instance-segmentation`` / ``image-object-detection`` results), and ``swinkit
evaluate`` scores it on a COCO ``.json`` or Azure ML ``.jsonl`` with COCO box (and mask) AP.

Training side (``swinkit train --task instance_segmentation``): the data, model start and evaluator of
``swinkit.tasks.instance_training``, mmdet's train pipeline (``swinkit.data.instance_transforms``), the
detector's own ``MaskRCNN.losses`` and mmdet's Swin 1x recipe (``RECIPES["mmdet_1x"]``) by default.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swinkit.checkpoint_io import atomic_write_json
from swinkit.engine.distributed import DistContext
from swinkit.tasks.base import Evaluator, Task, TrainLoader

MASK_ARCHITECTURE, BOX_ARCHITECTURE = "SwinMaskRCNN", "SwinFasterRCNN"  # config.json "architectures"
DETECTION_MODEL_TYPE = "swinkit_detection"


@dataclass
class DetectionConfig:
    """The instance segmentation / object detection tasks' pipeline (mmdet's COCO 1x)(YAML ``det:``, ``--set det.KEY=...``)."""

    scale: tuple[int, int] = (1333, 800)  # training keep-ratio resize bound (long side, short side)
    test_scale: tuple[int, int] | None = None  # evaluation and saved preprocessing; None: the same as scale
    hflip: float = 0.5  # probability of a horizontal flip (RandomFlip)
    # "resize" (the 1x pipeline: resize to scale, flip) or "ms_crop" (the 3x recipe's flip, multi-scale resize and
    # random crop; its sides are mmdet's at scale (1333, 800), scaled by short / 800 at another scale)
    train_pipeline: str = "resize"


class _EvalImages(Dataset):
    """(COCO image id, prepared image) of each image of an instance set: decoding in loader workers."""

    def __init__(self, dataset: Any, prepare: Any) -> None:
        self.dataset, self.prepare = dataset, prepare

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        from swinkit.data.decode import decode_image

        image = self.dataset[index]
        path = image.path()
        if path is None:
            raise ValueError(f"{image.where}: its image {image.file} is not found")
        return image.image_id, self.prepare(decode_image(path))


def _batches(dataset: Any, predictor: Any, batch_size: int, num_workers: int) -> Iterator[list]:
    loader = DataLoader(
        _EvalImages(dataset, predictor.prepare), batch_size=batch_size, num_workers=num_workers,
        collate_fn=list,
    )  # fmt: skip
    yield from loader


class InstanceSegmentationTask(Task):
    """Mask R-CNN: boxes, labels and masks per object; COCO box and mask AP."""

    name = "instance_segmentation"
    architecture: ClassVar[str] = MASK_ARCHITECTURE
    higher_is_better = True
    default_recipe = "mmdet_1x"  # swinkit train --task instance_segmentation starts from RECIPES["mmdet_1x"]
    options_section = "det"
    options_class = DetectionConfig

    @classmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        architectures = config_dict.get("architectures") or []
        return config_dict.get("model_type") == DETECTION_MODEL_TYPE and cls.architecture in architectures

    @classmethod
    def check_preset(cls, name: str) -> None:
        """A ValueError unless ``name`` is a detection preset of this task's kind (masks or not)."""
        from swinkit.models.detection.config import get_detection_preset

        preset = get_detection_preset(name)
        if preset.config.with_mask != (cls.architecture == MASK_ARCHITECTURE):
            other = "instance_segmentation" if preset.config.with_mask else "object_detection"
            raise ValueError(f"preset {name} is a model of the {other} task, not {cls.name}")

    @property
    def primary_metric(self) -> str:
        return "segm_mAP" if self.architecture == MASK_ARCHITECTURE else "bbox_mAP"

    def load_data(self) -> Any:
        from swinkit.tasks.instance_predictor import load_detector
        from swinkit.tasks.instance_training import load_instance_data

        cfg = self.config
        self.saved = load_detector(cfg.model.pretrained)[0] if cfg.model.pretrained else None
        data = load_instance_data(cfg, with_mask=self.architecture == MASK_ARCHITECTURE)
        self.labels, self.val_set = data.train.labels, data.val
        return data

    def build_model(self, data: Any) -> nn.Module:
        from swinkit.tasks.instance_training import build_detector

        model = build_detector(self.config, tuple(self.labels), getattr(self, "saved", None))
        if model.with_mask != (self.architecture == MASK_ARCHITECTURE):
            raise ValueError(
                f"the pretrained detector is a {model.config.architecture}, not a model of {self.name}"
            )
        return model

    def processor(self, model: nn.Module) -> Any:
        """mmdet's test pipeline at ``det.test_scale`` (else ``det.scale``), the model's mean/std and padding."""
        from swinkit.models.detection.preprocess import DetectionPreprocessor

        c, d = model.config, self.config.task_options
        return DetectionPreprocessor(d.test_scale or d.scale, c.pixel_mean, c.pixel_std, c.pad_size_divisor)

    def train_loader(self, data: Any, processor: Any, context: DistContext) -> TrainLoader:
        from swinkit.data.instance_transforms import CollateInstances, InstanceTrainSet
        from swinkit.engine.distributed import ShardedSampler
        from swinkit.models.detection.preprocess import DetectionPreprocessor

        cfg = self.config
        train_processor = DetectionPreprocessor(cfg.task_options.scale, processor.mean, processor.std,
                                                processor.pad_size_divisor)  # fmt: skip
        options = cfg.task_options
        dataset = InstanceTrainSet(data.train, train_processor, options.hflip, cfg.run.seed,
                                   multi_scale_crop(options))  # fmt: skip
        sampler = ShardedSampler(
            len(dataset), seed=cfg.run.seed, rank=context.rank, world_size=context.world_size
        )
        loader = DataLoader(
            dataset, batch_size=cfg.run.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
            collate_fn=CollateInstances(train_processor),
        )  # fmt: skip
        return TrainLoader(loader, dataset, sampler)

    def eval_loader(self, data: Any, processor: Any, batch_size: int, context: DistContext) -> DataLoader:
        from swinkit.data.instance_transforms import CollateInstances, InstanceEvalSet
        from swinkit.engine.distributed import eval_shard

        images = [data.images[i] for i in eval_shard(len(data), context)]
        return DataLoader(
            InstanceEvalSet(images, processor), batch_size=batch_size, shuffle=False,
            num_workers=self.config.data.num_workers, collate_fn=CollateInstances(processor),
        )  # fmt: skip

    def losses(
        self,
        model: nn.Module,
        batch: Any,
        rng: np.random.Generator,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        """``MaskRCNN.losses`` of the batch through the forward (so DDP syncs the gradients), the sampling
        drawn from ``rng``; ``acc`` is left out of the sum."""
        from swinkit.models.detection.structures import DetectionTargets

        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        targets = DetectionTargets(batch["gt_boxes"], batch["gt_labels"], batch.get("gt_masks"))
        with autocast:
            out = model(batch["pixel_values"], batch["image_metas"], targets, generator).losses
        return {k: v.float() for k, v in out.items() if k.startswith("loss")}

    def infer(self, model: nn.Module, batch: Any) -> Any:
        from swinkit.tasks.instance_predictor import _to_prediction

        output = model(batch["pixel_values"], batch["image_metas"])
        labels = model.config.label_names
        return [
            _to_prediction(d, m, labels, None, None) for d, m in zip(output.detections, batch["image_metas"])
        ]

    def evaluator(self, context: DistContext) -> Evaluator:
        from swinkit.tasks.instance_training import TrainCocoEvaluator

        return TrainCocoEvaluator(self.val_set, self.architecture == MASK_ARCHITECTURE, context)

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return summary_line(metrics)

    def write_report(
        self, directory: str | os.PathLike, report: dict[str, Any], evaluator: Evaluator
    ) -> dict:
        return write_report(directory, report, evaluator)

    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        from swinkit.models.detection.checkpoints import save_pretrained

        save_pretrained(model, directory, processor)

    def description(self, model: nn.Module, processor: Any) -> dict[str, str]:
        from swinkit.models.detection.checkpoints import description_metadata

        return description_metadata(model.config, processor)

    @classmethod
    def predictor(
        cls,
        source: str | os.PathLike,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        top_k: int | None = None,
        threshold: float | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        prepack: bool = False,
    ) -> Any:
        """``InstancePredictor`` of a saved detector: at most ``top_k`` objects per image (default: the model's
        ``max_per_img``, 100) scoring at least ``threshold`` (default: its ``score_threshold``, 0.05), its
        dense half run by ``runtime`` at ``precision`` (default: an export folder's own, else torch fp32)."""
        from swinkit.tasks.instance_predictor import InstancePredictor

        return InstancePredictor.from_pretrained(
            source, device=device, batch_size=batch_size, top_k=top_k, threshold=threshold,
            runtime=runtime, precision=precision, prepack=prepack,
        )  # fmt: skip

    @classmethod
    def report_text(cls, report: dict[str, Any]) -> str:
        """The headline AP line and the per-class AP table."""
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
    ) -> dict[str, Any]:
        """COCO AP of a saved detector on a COCO ``.json`` or Azure ML ``.jsonl`` set, with the model's own test
        rule (score 0.05, 100 per image, as mmdetection evaluates); ``threshold`` (a classification setting)
        is not used. The data's labels must be among the model's."""
        from swinkit.data.instance_formats import to_coco_dict
        from swinkit.data.instances import load_instances
        from swinkit.evaluation.coco import CocoEvaluator

        predictor = cls.predictor(source, device=device, batch_size=batch_size)
        dataset = load_instances(data, labels=predictor.labels)
        iou_types = ("bbox", "segm") if predictor.with_mask and dataset.has_masks else ("bbox",)
        context = DistContext(device=torch.device(device))
        evaluator = CocoEvaluator(to_coco_dict(dataset), dataset.labels, dataset.category_ids, context,
                                  iou_types=iou_types)  # fmt: skip
        for batch in _batches(dataset, predictor, batch_size, num_workers):
            evaluator.process([image_id for image_id, _ in batch], predictor.infer([p for _, p in batch]))
        primary = "segm_mAP" if "segm" in iou_types else "bbox_mAP"
        report = {"primary_metric": primary, "task": cls.name, **evaluator.compute()}
        if output is not None:
            write_report(output, report, evaluator)
        return report


class ObjectDetectionTask(InstanceSegmentationTask):
    """Faster R-CNN: boxes and labels per object; COCO box AP."""

    name = "object_detection"
    architecture: ClassVar[str] = BOX_ARCHITECTURE


TRAIN_PIPELINES = ("resize", "ms_crop")


def multi_scale_crop(options: DetectionConfig) -> Any:
    """The 3x pipeline of ``det.train_pipeline: ms_crop`` at ``det.scale``; None for the 1x ``resize``."""
    from swinkit.data.instance_augment import scaled_multi_scale_crop

    if options.train_pipeline not in TRAIN_PIPELINES:
        raise ValueError(
            f"det.train_pipeline must be one of {', '.join(TRAIN_PIPELINES)}, got {options.train_pipeline!r}"
        )
    if options.train_pipeline == "resize":
        return None
    return scaled_multi_scale_crop(options.scale, options.hflip)


def summary_line(metrics: dict[str, Any]) -> str:
    keys = ("bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50")
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def report_text(report: dict[str, Any]) -> str:
    lines = [f"{report['num_images']} images: {summary_line(report)}"]
    per_class = report.get("per_class", {})
    kinds = [k for k in ("bbox", "segm") if k in per_class]
    lines.append(f"{'label':<24} " + " ".join(f"{k + ' AP':>9}" for k in kinds))
    for label in per_class[kinds[0]] if kinds else []:
        lines.append(f"{label:<24} " + " ".join(f"{per_class[k][label]:>9.4f}" for k in kinds))
    return "\n".join(lines)


def write_report(directory: str | os.PathLike, report: dict[str, Any], evaluator: Any) -> dict[str, Path]:
    """metrics.json and a precision-recall plot per IoU type (``plots/pr_curves_bbox.png``, ``..._segm``)."""
    directory = Path(directory)
    written = {"metrics": directory / "metrics.json"}
    atomic_write_json(written["metrics"], _json_safe(report))
    written.update(evaluator.write_plots(directory / "plots"))
    return written


def _json_safe(value: Any) -> Any:
    """``value`` with NaN (a label without ground truth) as null, which JSON has."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and value != value else value

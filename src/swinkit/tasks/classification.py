"""Image classification, multi-class (softmax) and multi-label (sigmoid), as one task.

Multi-label or not is decided by the data (or ``data.multi_label``); it changes the loss, the metrics, the
primary metric (``accuracy`` or Azure's ``iou``), the summary and the plots, all in this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from swinkit.checkpoint_io import atomic_write_json
from swinkit.data.augment import MixupCutmix
from swinkit.engine import build
from swinkit.engine.config import TrainConfig
from swinkit.engine.distributed import DistContext, all_gather_rows, all_reduce_sum
from swinkit.engine.metrics import compute_metrics, pr_curves
from swinkit.engine.metrics import summary_line as classification_summary
from swinkit.loading import from_pretrained, save_pretrained
from swinkit.models.factory import create_model
from swinkit.models.swin import SwinTransformer
from swinkit.presets import get_preset
from swinkit.tasks.base import Evaluator, Task, TrainLoader

if TYPE_CHECKING:
    from swinkit.inference import Predictor

log = logging.getLogger(__name__)

CLASSIFICATION_PROBLEMS = ("single_label_classification", "multi_label_classification")


def train_loss(logits: torch.Tensor, soft_targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Soft-target cross-entropy (multi-class) or binary cross-entropy (multi-label), batch mean."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, soft_targets)
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def eval_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Summed (not averaged) cross-entropy or binary cross-entropy of a batch."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum") / targets.shape[1]
    return F.cross_entropy(logits, targets.long(), reduction="sum")


@dataclass
class Outputs:
    """Probabilities (N, C), targets ((N,) indices or (N, C) multi-hot) and the mean loss over all ranks."""

    probs: torch.Tensor
    targets: torch.Tensor
    loss: float


class ClassificationEvaluator(Evaluator):
    """Probabilities and targets of every rank, the mean loss, and the full metric set."""

    def __init__(
        self, labels: Sequence[str], multi_label: bool, threshold: float, context: DistContext
    ) -> None:
        self.labels, self.multi_label, self.threshold = tuple(labels), multi_label, threshold
        self.context = context
        self.outputs: Outputs | None = None
        self.reset()

    def reset(self) -> None:
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.loss = torch.zeros(2, dtype=torch.float64, device=self.context.device)  # (summed loss, count)

    def process(self, batch: tuple[torch.Tensor, torch.Tensor], outputs: torch.Tensor) -> None:
        _, target = batch
        logits = outputs.float()  # (B, C)
        self.loss[0] += eval_loss(logits, target, self.multi_label).double()
        self.loss[1] += target.shape[0]
        self.probs.append(torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1))
        self.targets.append(target)

    def gather(self) -> Outputs:
        """Every rank's probabilities and targets, in rank order, and the mean loss over all ranks."""
        device = self.context.device
        probs = torch.cat(self.probs) if self.probs else torch.zeros(0, len(self.labels), device=device)
        targets = torch.cat(self.targets) if self.targets else torch.zeros(0, dtype=torch.long, device=device)
        total = all_reduce_sum(self.loss, self.context)
        return Outputs(
            all_gather_rows(probs, self.context).cpu(),
            all_gather_rows(targets, self.context).cpu(),
            float(total[0] / total[1].clamp(min=1)),
        )

    def compute(self) -> dict[str, Any]:
        self.outputs = outputs = self.gather()
        metrics = compute_metrics(
            outputs.probs, outputs.targets, self.labels, self.multi_label, self.threshold
        )
        return {"loss": outputs.loss, "num_samples": int(outputs.probs.shape[0]), **metrics}


def write_report(
    directory: str | os.PathLike,
    report: dict[str, Any],
    outputs: Outputs,
    labels: Sequence[str],
    primary_metric: str,
    multi_label: bool,
) -> dict[str, Path]:
    """metrics.json (``report``: final metrics at the top level, and the per-epoch ``history`` of a training
    run) and PNG plots (curves over epochs, confusion matrix, precision-recall) in ``directory``."""
    from swinkit.engine import plots  # matplotlib is imported only when plots are drawn

    directory = Path(directory)
    written = {"metrics": directory / "metrics.json"}
    atomic_write_json(written["metrics"], report)
    plot_dir = directory / "plots"
    if report.get("history"):
        written["curves"] = plots.plot_history(report["history"], primary_metric, plot_dir / "curves.png")
    if "confusion_matrix" in report:
        written["confusion_matrix"] = plots.plot_confusion_matrix(
            report["confusion_matrix"], labels, plot_dir / "confusion_matrix.png"
        )
    curves = pr_curves(outputs.probs, outputs.targets, labels, multi_label)
    written["pr_curves"] = plots.plot_pr_curves(curves, plot_dir / "pr_curves.png")
    return written


def fit_head(model: SwinTransformer, labels: tuple[str, ...]) -> None:
    """Keep the checkpoint's head when it predicts these labels; otherwise a fresh head, said clearly."""
    current = model.config
    if current.labels == labels:
        return
    if current.labels is None and current.num_classes == len(labels):
        model.config = current.replace(labels=labels)
        log.info("the checkpoint's %d unnamed classes are named %s", len(labels), ", ".join(labels))
        return
    shown = ", ".join(current.label_names[:5]) + (", ..." if current.num_classes > 5 else "")
    log.warning(
        "fresh classification head: the checkpoint predicts %d classes (%s) but the data has %d (%s); "
        "the head is newly initialised and trained from scratch",
        current.num_classes,
        shown or "none",
        len(labels),
        ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else ""),
    )
    model.reset_classifier(len(labels), labels)


def build_classifier(config: TrainConfig, labels: tuple[str, ...], multi_label: bool) -> SwinTransformer:
    """The model to fine-tune (or train from scratch), with a head for ``labels`` and the problem type."""
    overrides = build.model_overrides(config)
    torch.manual_seed(config.run.seed)
    if config.model.pretrained:
        model = from_pretrained(config.model.pretrained, preset=config.model.preset, **overrides)
        fit_head(model, labels)
    else:
        if get_preset(config.model.preset).hub_id:
            log.warning(
                "training %s from scratch; pass --pretrained %s to fine-tune its published weights instead",
                config.model.preset,
                config.model.preset,
            )
        model = create_model(config.model.preset, labels=labels, **overrides)
    problem = "multi_label_classification" if multi_label else "single_label_classification"
    model.config = model.config.replace(problem_type=problem)
    return model


def mixer(config: TrainConfig, num_classes: int, multi_label: bool) -> MixupCutmix:
    """Mixup/CutMix with label smoothing: soft targets from hard labels (the task's batch augmentation)."""
    a = config.augment
    return MixupCutmix(
        num_classes, a.mixup, a.cutmix, a.mix_prob, a.switch_prob, a.label_smoothing, multi_label
    )


class ClassificationTask(Task):
    """Multi-class or multi-label image classification of a labelled folder, CSV or JSONL set."""

    name = "classification"
    higher_is_better = True

    def __init__(
        self, config: TrainConfig, labels: Sequence[str] | None = None, multi_label: bool | None = None
    ) -> None:
        super().__init__(config)
        self.labels = tuple(labels) if labels is not None else ()
        self.multi_label = bool(multi_label)
        self.mix: MixupCutmix | None = None

    @classmethod
    def matches(cls, config_dict: dict[str, Any]) -> bool:
        architectures = config_dict.get("architectures") or []
        if architectures:
            return any(a.endswith("ForImageClassification") for a in architectures)
        return config_dict.get("problem_type", CLASSIFICATION_PROBLEMS[0]) in CLASSIFICATION_PROBLEMS

    @property
    def primary_metric(self) -> str:
        """Azure's ``iou`` for multi-label, ``accuracy`` otherwise."""
        return "iou" if self.multi_label else "accuracy"

    def load_data(self) -> build.RunData:
        data = build.load_run_data(self.config)
        self.labels, self.multi_label = data.labels, data.multi_label
        return data

    def build_model(self, data: build.RunData) -> SwinTransformer:
        model = build_classifier(self.config, self.labels, self.multi_label)
        self.image_size = model.config.trunk.image_size
        self.mix = mixer(self.config, len(self.labels), self.multi_label)
        return model

    def processor(self, model: nn.Module) -> Any:
        return build.eval_processor(self.config, model.config.trunk)

    def train_loader(self, data: build.RunData, processor: Any, context: DistContext) -> TrainLoader:
        transform = build.train_transform(self.config, self.image_size, processor)
        return TrainLoader(*build.train_loader(self.config, data.train, transform, context))

    def eval_loader(self, data: Any, processor: Any, batch_size: int, context: DistContext) -> DataLoader:
        return build.eval_loader(data, processor, batch_size, self.config.data.num_workers, context)

    def losses(
        self,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        rng: np.random.Generator,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:
        pixels, targets = batch
        if self.mix is None:
            self.mix = mixer(self.config, len(self.labels), self.multi_label)
        pixels, soft = self.mix(pixels, targets, rng)
        with autocast:
            logits = model(pixels)
        return {"loss_cls": train_loss(logits.float(), soft, self.multi_label)}

    def infer(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return model(batch[0])

    def evaluator(self, context: DistContext) -> ClassificationEvaluator:
        return ClassificationEvaluator(self.labels, self.multi_label, self.config.run.threshold, context)

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return classification_summary(metrics, self.multi_label)

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        return {"problem_type": CLASSIFICATION_PROBLEMS[int(self.multi_label)]}

    def write_report(
        self, directory: str | os.PathLike, report: dict[str, Any], evaluator: Evaluator
    ) -> dict[str, Path]:
        assert isinstance(evaluator, ClassificationEvaluator) and evaluator.outputs is not None
        return write_report(
            directory, report, evaluator.outputs, self.labels, self.primary_metric, self.multi_label
        )

    def export(self, model: nn.Module, directory: str | os.PathLike, processor: Any) -> None:
        save_pretrained(model, directory, preprocessing=processor.to_preprocessor_config())

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
    ) -> Predictor:
        """``swinkit.inference.Predictor`` of a saved classifier, on ``runtime`` at ``precision``."""
        from swinkit.inference import Predictor

        return Predictor.from_pretrained(
            source,
            batch_size=batch_size,
            device=device,
            top_k=top_k,
            threshold=threshold,
            runtime=runtime,
            precision=precision,
            prepack=prepack,
        )

    @classmethod
    def report_text(cls, report: dict[str, Any]) -> str:
        """The headline line and the per-class precision / recall / F1 table."""
        multi_label = report["problem_type"] == CLASSIFICATION_PROBLEMS[1]
        lines = [f"{report['num_samples']} images: {classification_summary(report, multi_label)}"]
        lines.append(f"{'label':<24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for label, row in report["per_class"].items():
            lines.append(
                f"{label:<24} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} {row['support']:>8}"
            )
        return "\n".join(lines)

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
        """Accuracy (or multi-label IoU/mAP) of a saved classifier on ``data``, with the preprocessing
        ``swinkit predict`` applies; the data's labels must be among the model's, in the model's order."""
        from swinkit.data.datasets import load_dataset
        from swinkit.engine.evaluation import run_evaluation
        from swinkit.inference import Predictor

        predictor = Predictor.from_pretrained(source, device=device)
        config = TrainConfig()
        config.run.threshold, config.data.num_workers = threshold, num_workers
        task = cls(config, labels=predictor.labels, multi_label=predictor.multi_label)
        images = load_dataset(data, labels=predictor.labels, multi_label=task.multi_label)
        context = DistContext(device=torch.device(device))
        loader = task.eval_loader(images, predictor.processor, batch_size, context)
        evaluator = task.evaluator(context)
        metrics = run_evaluation(predictor.model, loader, task, evaluator, context)
        report = {"primary_metric": task.primary_metric, **task.report_fields(predictor.model), **metrics}
        if output is not None:
            task.write_report(output, report, evaluator)
        return report

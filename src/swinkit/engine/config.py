"""The typed configuration tree of a training run, filled from defaults, a YAML file and command-line flags.

Sections mirror the recipe: ``data``, ``model``, ``optim``, ``schedule``, ``augment``, ``mim`` (the masked image
modeling task's), ``seg`` (the semantic segmentation task's) and ``run``; the top-level ``task`` names the task. A YAML file
holds the same nested keys; ``apply_overrides`` takes dotted keys (``optim.lr``) as flags give them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swinkit.checkpoint_io import atomic_write_text


@dataclass
class DataConfig:
    train: str | None = None  # ImageFolder, CSV (path,label) or Azure JSONL
    val: str | None = None  # explicit validation set; otherwise ``val_split`` of ``train``
    val_split: float = 0.2  # fraction held out (stratified per class for multi-class), seeded by run.seed
    multi_label: bool | None = None  # None: multi-label when any item has several labels (or a JSONL list)
    num_workers: int = 0  # DataLoader worker processes
    crop_pct: float | None = 0.875  # evaluation: resize shortest edge to size / crop_pct, centre crop
    interpolation: str = "bicubic"  # evaluation and training resampling filter


@dataclass
class ModelConfig:
    preset: str | None = None  # architecture (see `swinkit models`); optional with ``pretrained``
    pretrained: str | None = None  # any source swinkit loads; None trains from scratch
    image_size: int | None = None  # training resolution (changes the native size; position tables resized)
    drop_path_rate: float | None = None  # stochastic depth; None keeps the preset's


# Named recipes: the defaults are the light fine-tuning recipe, chosen by measurement (docs/design.md, "The
# default fine-tuning recipe"); ``imagenet`` is the official from-scratch ImageNet recipe.
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "imagenet": {
        "optim.lr": 1e-4,
        "augment.scale": (0.08, 1.0),
        "augment.randaugment_ops": 2,
        "augment.random_erasing": 0.25,
        "augment.mixup": 0.8,
        "augment.cutmix": 1.0,
    },
    # mmsegmentation 1.x's Swin UPerNet ADE20K recipe (configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_
    # 8xb2-160k_ade20k-512x512.py over configs/_base_/schedules/schedule_160k.py): AdamW 6e-5 with no decay on
    # position tables and norms, no gradient clipping, LinearLR warm-up over 1500 iterations from factor 1e-6,
    # then PolyLR (power 1, eta_min 0) to 160k iterations; 2 images per process (8 processes x 2 = 16).
    "mmseg": {
        "optim.lr": 6e-5,
        "optim.weight_decay": 0.01,
        "optim.betas": (0.9, 0.999),
        "optim.clip_grad": None,
        "optim.no_decay_keys": "absolute_pos_embed,relative_position_bias_table,norm",
        "schedule.kind": "poly",
        "schedule.power": 1.0,
        "schedule.iterations": 160000,
        "schedule.warmup_iters": 1500,
        "schedule.warmup_factor": 1e-6,
        "schedule.min_lr": 0.0,
        "run.batch_size": 2,
    },
    # mmdetection 3.3's Swin Mask R-CNN 1x (configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py over
    # configs/_base_/schedules/schedule_1x.py): AdamW 1e-4, betas (0.9, 0.999), weight decay 0.05 with none on
    # absolute_pos_embed, relative_position_bias_table and norms, no gradient clipping, LinearLR warm-up over
    # 1000 iterations from factor 0.001, MultiStepLR x0.1 at epochs 8 and 11 of 12; 2 images per process.
    "mmdet_1x": {
        "optim.lr": 1e-4,
        "optim.weight_decay": 0.05,
        "optim.betas": (0.9, 0.999),
        "optim.clip_grad": None,
        "optim.no_decay_keys": "absolute_pos_embed,relative_position_bias_table,norm",
        "schedule.kind": "step",
        "schedule.epochs": 12,
        "schedule.milestones": (8, 11),
        "schedule.gamma": 0.1,
        "schedule.warmup_iters": 1000,
        "schedule.warmup_factor": 0.001,
        "det.scale": (1333, 800),
        "det.hflip": 0.5,
        "run.batch_size": 2,
    },
}


def apply_recipe(config: TrainConfig, name: str) -> TrainConfig:
    """Set the keys of the named recipe (see ``RECIPES``) on ``config``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are {', '.join(sorted(RECIPES))}")
    return apply_overrides(config, {**_finetune_values(), **RECIPES[name]})


def _finetune_values() -> dict[str, Any]:
    """The default (finetune) values of every key some recipe sets, so recipes replace each other fully."""
    defaults = TrainConfig().to_dict()
    keys = {key for recipe in RECIPES.values() for key in recipe}
    return {key: flatten(defaults)[key] for key in keys}


@dataclass
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (per process batch; not rescaled)
    weight_decay: float = 0.05  # AdamW decay, not applied to norms, biases, position tables and embeddings
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 1.0  # layer-wise lr decay: block k of L gets lr * layer_decay ** (L + 1 - k)
    clip_grad: float | None = 5.0  # max global gradient norm; None disables
    accum_steps: int = 1  # micro-batches per optimizer step
    freeze_stages: int = 0  # freeze the patch embedding and the first N stages (Azure's layers_to_freeze)
    # comma-separated name substrings: exactly the parameters whose names hold one get no weight decay
    # (mmseg's paramwise_cfg custom_keys with decay_mult 0); None: norms, biases, position tables, embeddings
    no_decay_keys: str | None = None


@dataclass
class ScheduleConfig:
    epochs: int = 30
    warmup_epochs: float = 1.0  # linear warm-up from warmup_lr to lr
    warmup_lr: float = 1e-7
    min_lr: float = 1e-6  # end of the cosine (or poly) decay
    kind: str = (
        "cosine"  # decay after the warm-up: cosine, poly (mmseg's PolyLR) or step (mmdet's MultiStepLR)
    )
    power: float = 1.0  # exponent of the poly decay
    iterations: int | None = None  # total optimizer steps (an iteration-based run); None: epochs x epoch
    warmup_iters: int | None = None  # warm-up optimizer steps; None: warmup_epochs * steps per epoch
    warmup_factor: float | None = None  # warm-up from lr * factor (mmseg's start_factor); None: warmup_lr
    milestones: tuple[int, int] = (8, 11)  # step decay: epochs after which the lr is multiplied by gamma
    gamma: float = 0.1  # step decay factor (mmengine's MultiStepLR)


@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.5, 1.0)  # random resized crop: area fraction
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # random resized crop: aspect ratio
    hflip: float = 0.5  # probability of a horizontal flip
    randaugment_ops: int = 0  # RandAugment operations per image (0 disables)
    randaugment_magnitude: float = 9.0  # 0..10
    randaugment_std: float = 0.5  # magnitude noise
    random_erasing: float = 0.0  # probability of erasing one rectangle with noise
    mixup: float = 0.0  # Beta(alpha, alpha) of Mixup; 0 disables
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0 disables
    mix_prob: float = 1.0  # probability of mixing a batch at all
    switch_prob: float = 0.5  # probability of CutMix rather than Mixup when both are on
    label_smoothing: float = 0.1


@dataclass
class MimConfig:
    """The masked-image-modeling task's settings (SimMIM recipe); other tasks ignore them."""

    mask_patch_size: int = 32  # side of a masked square, in pixels (a multiple of the model's patch)
    mask_ratio: float = 0.6  # fraction of mask squares masked per image
    scale: tuple[float, float] = (0.67, 1.0)  # random resized crop: area fraction
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # random resized crop: aspect ratio
    hflip: float = 0.5  # probability of a horizontal flip
    interpolation: str = "bilinear"  # the crop's filter (torchvision's RandomResizedCrop default, as SimMIM)
    norm_target_patch: int = 0  # 0: raw-pixel targets; odd k: standardised over k x k (SwinV2 SimMIM: 47)


@dataclass
class SegmentationConfig:
    """The semantic segmentation task's data and pipeline (mmseg's ADE20K settings); other tasks ignore them."""

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


@dataclass
class DetectionConfig:
    """The instance segmentation / object detection tasks' pipeline (mmdet's COCO 1x); other tasks ignore it."""

    scale: tuple[int, int] = (1333, 800)  # training keep-ratio resize bound (long side, short side)
    test_scale: tuple[int, int] | None = None  # evaluation and saved preprocessing; None: the same as scale
    hflip: float = 0.5  # probability of a horizontal flip (RandomFlip)


@dataclass
class RunConfig:
    output: str | None = None  # the run folder
    batch_size: int = 32  # per process and micro-batch
    eval_batch_size: int | None = None  # None: 2 * batch_size
    seed: int = 0  # data order, split, augmentation and initialisation are pure functions of the seed
    ema: bool = False  # keep an exponential moving average of the weights (evaluated and saved)
    ema_decay: float = 0.9998
    bf16: bool = False  # bfloat16 autocast
    patience: int | None = None  # stop after this many epochs without a better validation metric
    checkpoint_every: int = 50  # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
    threshold: float = 0.5  # multi-label decision threshold
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True  # progress bar per epoch


@dataclass
class TrainConfig:
    task: str = "classification"  # the task trained (see swinkit.tasks): classification, ...
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mim: MimConfig = field(default_factory=MimConfig)
    seg: SegmentationConfig = field(default_factory=SegmentationConfig)
    det: DetectionConfig = field(default_factory=DetectionConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = cls()
        apply_overrides(config, flatten(data))
        return config

    def validate(self) -> None:
        """Raise ValueError for settings no run can use."""
        from swinkit.tasks import get_task  # the tasks import this module

        task = get_task(self.task)
        if not self.data.train:
            raise ValueError(
                "no training data: pass --data (a class-per-folder directory, a CSV or a JSONL file)"
            )
        if not self.run.output:
            raise ValueError("no run folder: pass --output RUN")
        if not self.model.preset and not self.model.pretrained:
            raise ValueError("pass --preset NAME (architecture) and/or --pretrained SRC (weights)")
        if self.model.preset:
            task.check_preset(self.model.preset)  # an unknown name fails here, before any data is read
        if not 0.0 < self.data.val_split < 1.0 and not self.data.val:
            raise ValueError(f"val_split must be in (0, 1), got {self.data.val_split}")
        for name, value in (
            ("batch_size", self.run.batch_size),
            ("accum_steps", self.optim.accum_steps),
            ("epochs", self.schedule.epochs),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.schedule_checks()
        if self.run.patience is not None and self.run.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {self.run.patience}")
        for name, source in (("--data", self.data.train), ("--val-data", self.data.val)):
            if source and not Path(source).exists():
                raise ValueError(f"{name} {source} does not exist")

    def schedule_checks(self) -> None:
        """Raise ValueError for a schedule kind or length no run can use."""
        s = self.schedule
        if s.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule.kind must be one of {', '.join(SCHEDULE_KINDS)}, got {s.kind!r}")
        for name, value in (("schedule.iterations", s.iterations), ("schedule.warmup_iters", s.warmup_iters)):
            if value is not None and value < (1 if name.endswith("iterations") else 0):
                raise ValueError(
                    f"{name} must be at least {1 if name.endswith('iterations') else 0}, got {value}"
                )


SCHEDULE_KINDS = ("cosine", "poly", "step")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '(top)'} must be a mapping")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the field type ``hint``; ValueError naming ``key`` when impossible."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: cannot be None")
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if isinstance(value, str) and hint is not str:
        value = _parse_scalar(value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        return str(value)
    raise ValueError(f"{key}: unsupported type {hint}")


def _parse_scalar(text: str, hint: Any) -> Any:
    """A flag's text as YAML, except that numbers YAML 1.1 reads as strings (``2e-3``) become numbers."""
    if hint is float:
        with contextlib.suppress(ValueError):
            return float(text)
    return yaml.safe_load(text)


TOP_LEVEL = ("task",)  # keys outside the sections


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set dotted keys (``optim.lr``) on ``config`` in place, converting values to the field types."""
    for key, value in overrides.items():
        if key in TOP_LEVEL:
            setattr(config, key, _coerce(value, str, key))
            continue
        parts = key.split(".")
        if len(parts) != 2 or not hasattr(config, parts[0]) or parts[0].startswith("_"):
            raise ValueError(
                f"unknown config key {key!r}; keys: task, and the sections data, model, optim, schedule, "
                "augment, mim, seg, det, run"
            )
        section = getattr(config, parts[0])
        hints = typing.get_type_hints(type(section))
        if parts[1] not in hints:
            raise ValueError(f"unknown config key {key!r}; {parts[0]} has: {', '.join(hints)}")
        setattr(section, parts[1], _coerce(value, hints[parts[1]], key))
    return config


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of sections (data, model, optim, ...)")
    return data


def save_yaml(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

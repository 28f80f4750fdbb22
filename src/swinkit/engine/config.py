"""The typed configuration tree of a training run, filled from defaults, a YAML file and command-line flags.

Sections mirror the recipe: ``data``, ``model``, ``optim``, ``schedule``, ``augment`` and ``run``, shared by
every task, and the run's task's own section, if it has one (``Task.options_section``, typed by
``Task.options_class``: masked image modeling's ``mim``), held in ``TrainConfig.task_options``; the
top-level ``task`` names the task. A YAML file holds the same nested keys; ``apply_overrides`` takes dotted
keys (``optim.lr``, ``mim.mask_ratio``) as flags give them.
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
# default fine-tuning recipe"); ``imagenet`` is the official from-scratch ImageNet recipe; ``simmim`` is the
# SimMIM pre-training recipe (microsoft/SimMIM configs/swin_base__100ep/
# simmim_pretrain__swin_base__img192_window6__100ep.yaml over its config.py: AdamW, warm-up then cosine,
# gradient clipping 5.0, weight decay 0.05; drop path stays the model's). A task names its default recipe
# (``Task.default_recipe``), used when ``--recipe`` is not given.
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
    "simmim": {
        "schedule.epochs": 100,
        "schedule.warmup_epochs": 10.0,
        "optim.weight_decay": 0.05,
        "optim.betas": (0.9, 0.999),
        "optim.eps": 1e-8,
        "optim.clip_grad": 5.0,
        "optim.layer_decay": 1.0,
        "optim.lr": 2e-4,
        "schedule.warmup_lr": 1e-6,
        "schedule.min_lr": 1e-5,
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
# mmdet's Swin 3x (configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py): the 1x optimizer and warm-up,
# 36 epochs with x0.1 at 27 and 33, and the multi-scale + crop train pipeline (flip, RandomChoice of a
# 480..800 resize or a 400/500/600 resize, 384..600 crop and 480..800 resize; long side 1333).
RECIPES["mmdet_3x"] = {
    **RECIPES["mmdet_1x"],
    "schedule.epochs": 36,
    "schedule.milestones": (27, 33),
    "det.train_pipeline": "ms_crop",
}
# Recipes whose learning rates are given per this many images: the run scales them by its total batch
# (per-process batch * processes * accumulation steps) / this, as SimMIM's main_simmim.py does.
LR_REFERENCE_BATCH: dict[str, int] = {"simmim": 512}
LR_KEYS = ("optim.lr", "schedule.warmup_lr", "schedule.min_lr")


def apply_recipe(config: TrainConfig, name: str) -> TrainConfig:
    """Set the keys of the named recipe (see ``RECIPES``) on ``config``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are {', '.join(sorted(RECIPES))}")
    return apply_overrides(config, {**_finetune_values(config.task), **RECIPES[name]})


def _finetune_values(task: str) -> dict[str, Any]:
    """The default values of every key of ``task``'s config that some recipe sets, so recipes replace each
    other fully (keys of other tasks' own sections are not ``task``'s to reset)."""
    defaults = flatten(TrainConfig(task=task).to_dict())
    keys = {key for recipe in RECIPES.values() for key in recipe}
    return {key: defaults[key] for key in keys if key in defaults}


def scaled_lrs(recipe: str, total_batch: int, base_lr: float | None = None) -> dict[str, float]:
    """The recipe's learning rates (per ``LR_REFERENCE_BATCH[recipe]`` images) for ``total_batch`` images per
    optimizer step; ``base_lr`` replaces the recipe's peak rate and scales the other two alike."""
    if recipe not in LR_REFERENCE_BATCH:
        raise ValueError(
            f"the {recipe} recipe's learning rates do not scale with the batch; set optim.lr instead of a base lr"
        )
    if total_batch < 1:
        raise ValueError(f"the total batch must be at least 1 image, got {total_batch}")
    values = RECIPES[recipe]
    factor = (base_lr / values["optim.lr"] if base_lr is not None else 1.0) * total_batch
    return {key: values[key] * factor / LR_REFERENCE_BATCH[recipe] for key in LR_KEYS}


def resolve(
    saved: TrainConfig | None,
    recipe: str | None,
    overrides: dict[str, Any],
    *,
    world_size: int = 1,
    base_lr: float | None = None,
) -> TrainConfig:
    """A run's config: ``saved`` (a resumed run's) or the defaults under the recipe, then ``overrides``.

    A new run without ``recipe`` takes its task's ``default_recipe``; a resumed run keeps its saved values
    unless a recipe is named. Then, for a recipe whose learning rates are per a reference batch (or with
    ``base_lr``), the learning rates not in ``overrides`` are scaled by the run's total batch.
    """
    config = saved if saved is not None else TrainConfig()
    task = _registered(str(overrides.get("task", config.task)))  # an unknown name fails in validate()
    if recipe is None and saved is None and task is not None:
        recipe = task.default_recipe
    if task is not None:
        config.set_task(task.name)  # first, so that a recipe may set keys of the task's own section
    if recipe is not None:
        apply_recipe(config, recipe)
    apply_overrides(config, overrides)
    default = getattr(_registered(config.task), "default_recipe", None)
    scaling = recipe if recipe is not None or base_lr is None else default
    if scaling in LR_REFERENCE_BATCH or base_lr is not None:
        total = config.run.batch_size * world_size * config.optim.accum_steps
        lrs = scaled_lrs(scaling, total, base_lr)
        apply_overrides(config, {k: v for k, v in lrs.items() if k not in overrides})
    return config


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


SECTIONS = ("data", "model", "optim", "schedule", "augment", "run")  # shared by every task


@dataclass
class TrainConfig:
    task: str = "classification"  # the task trained (see swinkit.tasks): classification, ...
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    task_options: Any = None  # the task's own section (an instance of its options_class); None: it has none

    def __post_init__(self) -> None:
        if self.task_options is None:
            self.task_options = _task_section(self.task)[1]

    def set_task(self, name: str) -> None:
        """Train task ``name``: its own section starts from its defaults unless this task holds it already."""
        if name != self.task:
            self.task, self.task_options = name, _task_section(name)[1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task}
        out.update({name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS[:-1]})
        if self.task_options is not None:
            out[_task_section(self.task)[0]] = _plain(dataclasses.asdict(self.task_options))
        out["run"] = _plain(dataclasses.asdict(self.run))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from ``to_dict``'s mapping (a saved ``train_config.yaml`` or a checkpoint's).

        Files written when every task's section was in every config hold other tasks' sections at their
        defaults; those are skipped (one with other values is an error naming its task).
        """
        config = cls()
        values = flatten(data)
        if "task" in values:
            config.set_task(_coerce(values.pop("task"), str, "task"))
        apply_overrides(config, {k: v for k, v in values.items() if not _default_of_other_task(config, k, v)})
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


def _registered(task: str) -> Any:
    """The task class registered as ``task``; None for a name no task has (``validate`` says so)."""
    from swinkit.tasks import get_task, task_names  # the tasks import this module

    return get_task(task) if task in task_names() else None


def _task_section(task: str) -> tuple[str | None, Any]:
    """(section name, default options) of ``task``'s own config section; (None, None) when it has none."""
    cls = _registered(task)
    if cls is None or cls.options_class is None:
        return None, None
    return cls.options_section, cls.options_class()


def _section_owner(name: str) -> str | None:
    """The registered task whose own config section is called ``name``."""
    from swinkit.tasks import get_task, task_names

    return next((t for t in task_names() if get_task(t).options_section == name), None)


def _default_of_other_task(config: TrainConfig, key: str, value: Any) -> bool:
    """Whether ``key`` is in another task's section and holds that task's default value."""
    name, _, field_name = key.partition(".")
    owner = None if name in SECTIONS or name == _task_section(config.task)[0] else _section_owner(name)
    if owner is None:
        return False
    defaults = _plain(dataclasses.asdict(_task_section(owner)[1]))
    return field_name in defaults and defaults[field_name] == _plain(value)


def _section(config: TrainConfig, key: str) -> Any:
    """The section object a dotted ``key`` sets: a shared section or the run's task's own."""
    name = key.split(".")[0]
    own = _task_section(config.task)[0]
    if name in SECTIONS:
        return getattr(config, name)
    if own is not None and name == own:
        return config.task_options
    owner = _section_owner(name)
    if owner is not None:
        raise ValueError(
            f"{key!r} is a setting of the {owner} task; this run trains {config.task} (set task={owner} for it)"
        )
    extra = f", and {config.task}'s own section {own}" if own else ""
    raise ValueError(f"unknown config key {key!r}; keys: task, the sections {', '.join(SECTIONS)}{extra}")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set dotted keys (``optim.lr``, a task section's ``mim.mask_ratio``) on ``config`` in place, converting
    values to the field types; ``task`` first, so that the keys of its own section are known."""
    if "task" in overrides:
        config.set_task(_coerce(overrides["task"], str, "task"))
    for key, value in overrides.items():
        if key in TOP_LEVEL:
            continue
        parts = key.split(".")
        if len(parts) != 2:
            raise ValueError(f"unknown config key {key!r}; keys are task or section.name (e.g. optim.lr)")
        section = _section(config, key)
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

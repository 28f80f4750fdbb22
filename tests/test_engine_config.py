import copy

import pytest
import torch

import swinkit
from swinkit.engine.config import TrainConfig, apply_recipe, flatten
from swinkit.engine.ema import ModelEma


def test_patience_must_be_at_least_one_epoch():
    config = TrainConfig.from_dict(
        {"data": {"train": "d"}, "run": {"output": "o", "patience": 0}, "model": {"preset": "swin_micro"}}
    )
    with pytest.raises(ValueError, match="patience must be at least 1"):
        config.validate()


def test_ema_leaves_frozen_parameters_bit_identical():
    model = swinkit.create_model("swinv2_micro", num_classes=2)
    model.patch_embed.requires_grad_(False)
    frozen = copy.deepcopy(model.patch_embed.proj.weight)
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    for _ in range(5):
        ema.update(model)
    assert torch.equal(ema.module.patch_embed.proj.weight, frozen)
    assert not torch.equal(ema.module.head.weight, model.head.weight)  # trained weights still average


def test_default_recipe_is_the_measured_fine_tuning_one_and_imagenet_is_named():
    """docs/design.md's table: the light recipe won every cell, so it is the default; imagenet stays by name."""
    from swinkit.cli import build_parser
    from swinkit.cli.train import resolve_config

    default = TrainConfig()
    assert (default.augment.mixup, default.augment.cutmix, default.augment.randaugment_ops) == (0.0, 0.0, 0)
    assert default.augment.random_erasing == 0.0 and default.augment.scale == (0.5, 1.0)
    assert default.optim.lr == 5e-4
    args = build_parser().parse_args(["train", "--recipe", "imagenet", "--set", "augment.mixup=0.2"])
    config = resolve_config(args)
    assert (config.augment.cutmix, config.augment.randaugment_ops, config.optim.lr) == (1.0, 2, 1e-4)
    assert config.augment.mixup == 0.2 and config.augment.scale == (0.08, 1.0)  # --set still wins
    back = apply_recipe(config, "finetune")
    assert flatten(back.to_dict()) == flatten(TrainConfig().to_dict())  # recipes replace each other fully
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        apply_recipe(TrainConfig(), "fast")


def test_a_task_owns_its_config_section_without_the_engine_naming_it(tmp_path):
    """A task declares its section (options_section/options_class): YAML, --set and validation follow."""
    from dataclasses import dataclass
    from pathlib import Path

    from swinkit.engine import config as engine_config
    from swinkit.engine.config import apply_overrides, load_yaml, save_yaml
    from swinkit.tasks import ClassificationTask, register, unregister

    @dataclass
    class BlurOptions:
        sigma: float = 1.0
        kernel: tuple[int, int] = (3, 3)

    class BlurTask(ClassificationTask):
        name, options_section, options_class = "blur", "blur", BlurOptions

    assert "blur" not in Path(engine_config.__file__).read_text() and not hasattr(engine_config, "MimConfig")
    register(BlurTask)
    try:
        config = apply_overrides(
            TrainConfig(), {"blur.kernel": "5,7", "task": "blur"}
        )  # task first, any order
        assert config.task_options == BlurOptions(kernel=(5, 7))
        save_yaml(config, tmp_path / "run.yaml")
        assert load_yaml(tmp_path / "run.yaml")["blur"] == {"sigma": 1.0, "kernel": [5, 7]}
        assert TrainConfig.from_dict(load_yaml(tmp_path / "run.yaml")) == config
        with pytest.raises(ValueError, match="blur has: sigma, kernel"):
            apply_overrides(config, {"blur.radius": 2})
        with pytest.raises(
            ValueError, match="'mim.mask_ratio' is a setting of the masked_image_modeling task"
        ):
            apply_overrides(config, {"mim.mask_ratio": 0.5})
        with pytest.raises(ValueError, match="'blur.sigma' is a setting of the blur task"):
            apply_overrides(TrainConfig(), {"blur.sigma": 2.0})
        assert "blur" not in TrainConfig().to_dict() and TrainConfig().task_options is None
    finally:
        unregister("blur")

import copy

import pytest
import torch

import swinkit
from swinkit.engine.config import TrainConfig
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

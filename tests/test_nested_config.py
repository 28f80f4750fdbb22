"""The shared dict form and replace rule of configs with a nested trunk (UperNetConfig, MaskRCNNConfig)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from swinkit.models.detection.checkpoints import config_to_json
from swinkit.models.detection.config import DETECTION_PRESETS, MaskRCNNConfig
from swinkit.models.nested_config import config_from_dict, config_to_dict, replace_labelled
from swinkit.models.segmentation.config import SEGMENTATION_PRESETS, UperNetConfig
from swinkit.presets import SwinConfig, get_preset

# sha256 over every preset's to_dict (repr and JSON) and the detectors' config.json, taken from the code
# before the shared helper: the saved bytes, key order and list/tuple types must not change
GOLDEN = "c74ec864c95514bbfbcbb560c51283ede57365a46d63512d3373edb9169ec986"


@dataclass(frozen=True)
class HeadConfig:
    backbone: SwinConfig
    num_classes: int
    widths: tuple[int, ...] = (4, 8)
    labels: tuple[str, ...] | None = None


def _variants():
    for name, preset in sorted(SEGMENTATION_PRESETS.items()):
        yield name, preset.config
        yield name, preset.config.replace(labels=["a", "b", "c"], pool_scales=[1, 3])
    for name, preset in sorted(DETECTION_PRESETS.items()):
        yield name, preset.config
        yield name, preset.config.replace(labels=["x", "y"], anchor_ratios=[1.0], test_scale=[640, 480])


def test_saved_configs_are_byte_identical_to_before_and_round_trip():
    digest = hashlib.sha256()
    for name, config in _variants():
        data = config.to_dict()
        digest.update(repr(data).encode())
        digest.update(json.dumps(data).encode())
        assert type(config).from_dict(json.loads(json.dumps(data))) == config, name
        if isinstance(config, MaskRCNNConfig):
            digest.update(json.dumps(config_to_json(config), indent=2).encode())
    assert digest.hexdigest() == GOLDEN


def test_a_new_config_with_a_nested_trunk_gets_the_same_rules():
    config = HeadConfig(get_preset("swin_micro").config, num_classes=2)
    data = config_to_dict(config)
    assert list(data) == ["backbone", "num_classes", "widths", "labels"]
    assert data["widths"] == [4, 8] and data["backbone"] == config.backbone.to_dict()
    assert config_from_dict(HeadConfig, json.loads(json.dumps(data))) == config
    labelled = replace_labelled(config, {"labels": ["cat", "dog", "eel"], "widths": [2]})
    assert (labelled.num_classes, labelled.labels, labelled.widths) == (3, ("cat", "dog", "eel"), (2,))
    assert replace_labelled(labelled, {"num_classes": 5}).labels is None


def test_unknown_fields_name_the_config_class():
    data = UperNetConfig(get_preset("swin_micro").config, num_classes=3).to_dict()
    with pytest.raises(ValueError, match=r"unknown UperNetConfig fields: \['colour'\]"):
        UperNetConfig.from_dict({**data, "colour": 1})

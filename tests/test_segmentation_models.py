"""``swinkit models --task semantic_segmentation``: the UPerNet presets with parameters and GFLOPs; Swin-T
UPerNet has exactly transformers' parameters (about 60M with the auxiliary head, the paper's figure)."""

from __future__ import annotations

import json

import torch
from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

from swinkit.cli import main
from swinkit.models.segmentation import SEGMENTATION_PRESETS

TINY = "upernet_swin_tiny_patch4_window7_224_1k_ade20k_512"


def test_swin_t_upernet_has_transformers_parameter_count(capsys):
    assert main(["models", "--task", "semantic_segmentation", "--json", "tiny"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    backbone = SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    with torch.device("meta"):
        reference = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, num_labels=150))
    counted = {name: p.numel() for name, p in reference.named_parameters()}
    unused = {
        name for name in counted if name.startswith("backbone.swin.layernorm.")
    }  # SwinModel's final norm
    assert unused == {"backbone.swin.layernorm.weight", "backbone.swin.layernorm.bias"}
    assert row["params"] == sum(n for name, n in counted.items() if name not in unused) == 59_941_862
    assert row["name"] == TINY and row["hub_id"] == "openmmlab/upernet-swin-tiny"
    assert round(row["gflops"]) == 944  # the paper's 945G at 512x2048 (without the auxiliary head)
    assert (row["crop_size"], row["num_classes"], row["miou"], row["miou_ms_flip"]) == (
        512,
        150,
        44.41,
        45.79,
    )


def test_the_table_lists_the_segmentation_presets(capsys):
    assert main(["models", "--task", "semantic_segmentation", "micro"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "backbone", "pretrain", "crop"]
    assert len(lines) == 2 and lines[1].startswith("upernet_swin_micro ") and "2.5M" in lines[1]
    assert main(["models", "--task", "semantic_segmentation", "no_such"]) == 2
    assert "among the semantic_segmentation presets" in capsys.readouterr().err
    assert sum("window" in name for name in SEGMENTATION_PRESETS) == 8  # every row of mmseg's table

"""`swinkit models`: every preset with parameters, GFLOPs, windows, classes, hub id and preprocessing."""

import json

import swinkit
from swinkit.cli import main
from swinkit.presets import PRESETS


def _json_rows(capsys, *args):
    assert main(["models", "--json", *args]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_json_lists_every_preset_with_its_cost(capsys):
    rows = _json_rows(capsys, "--task", "classification")
    assert set(PRESETS) <= set(rows)
    tiny = rows["swin_tiny_patch4_window7_224"]
    assert tiny["params"] == 28_288_354
    assert round(tiny["gflops"], 1) == 4.5
    assert tiny["hub_id"] == "microsoft/swin-tiny-patch4-window7-224"
    assert tiny["preprocessing"] == "resize 256 + center crop 224, bicubic"
    b384 = rows["swin_base_patch4_window12_384_22k"]
    assert (b384["num_classes"], b384["image_size"], b384["window_size"]) == (21841, 384, 12)
    assert b384["preprocessing"] == "resize 384, bicubic"
    ft = rows["swinv2_large_patch4_window12to24_192to384_22kto1k_ft"]
    assert ft["stage_window_sizes"] == [24, 24, 24, 12]
    assert ft["pretrained_window_sizes"] == [12, 12, 12, 6]


def test_parameter_counts_equal_the_built_models(capsys):
    rows = {name: row for name, row in _json_rows(capsys, "micro").items() if name in PRESETS}
    assert set(rows) == {"swin_micro", "swinv2_micro"}
    for name, row in rows.items():
        model = swinkit.create_model(name)
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["hub_id"] is None


def test_table_shows_one_aligned_row_per_preset(capsys):
    assert main(["models", "--task", "classification", "window7_224"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "v", "params", "GFLOPs"]
    tiny = next(line for line in lines if line.startswith("swin_tiny_patch4_window7_224 "))
    assert "28.3M" in tiny and " 4.5 " in tiny and "resize 256 + center crop 224, bicubic" in tiny
    assert len(lines) == 1 + sum("window7_224" in name for name in PRESETS)


def test_a_filter_matching_nothing_is_a_user_error(capsys):
    assert main(["models", "no_such_model"]) == 2
    assert "no preset name contains" in capsys.readouterr().err


def test_default_listing_shows_every_task_in_its_own_table(capsys):
    assert main(["models", "micro"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line.startswith("# ")]
    assert headings == ["# classification", "# semantic_segmentation", "# detection"]
    assert "swin_micro " in out and "upernet_swin_micro" in out and "mask_rcnn_swin_micro" in out
    assert main(["models", "--json", "micro"]) == 0
    tasks = {row["name"]: row["task"] for row in json.loads(capsys.readouterr().out)}
    assert tasks["swin_micro"] == "classification" and tasks["mask_rcnn_swin_micro"] == "detection"

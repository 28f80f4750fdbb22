"""``make demo-instances``: generated fridgeObjects-style scenes in the Azure ML instance JSONL, and the
whole fine-tune / evaluate / predict run on them."""

import json

import pytest

from swinkit.data.instances import load_instances
from swinkit.demo_instances import CLASSES, SIZE, main, write_scenes


def test_scenes_are_an_azure_instance_set_with_masks(tmp_path):
    train, held_out = write_scenes(tmp_path, 12, 4)
    data = load_instances(train)
    assert len(data) == 12 and len(load_instances(held_out)) == 4
    assert set(data.labels) <= set(CLASSES) and data.has_masks
    for image in data.images:
        assert (image.width, image.height) == (SIZE, SIZE) and len(image.boxes) >= 1
        assert (image.boxes[:, 2] > image.boxes[:, 0]).all() and (image.boxes[:, 2:] <= SIZE).all()
    first = json.loads(train.read_text().splitlines()[0])
    polygon = first["label"][0]["polygon"][0]
    assert len(polygon) >= 8 and all(0 <= v <= 1 for v in polygon)


@pytest.mark.slow
def test_demo_trains_evaluates_and_draws(tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--images", "8", "--epochs", "1"]) == 0
    report = json.loads((tmp_path / "held_out_eval" / "metrics.json").read_text())
    assert 0.0 <= report["segm_mAP_50"] <= 1.0 and "bbox_mAP" in report
    assert (tmp_path / "run" / "config.json").is_file()
    assert sorted(p.suffix for p in (tmp_path / "predictions").iterdir()) == [".png", ".png"]
    assert "held-out segm_mAP" in capsys.readouterr().out

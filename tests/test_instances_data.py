"""Instance datasets (swinkit.data.instances): COCO and Azure ML JSONL read into one representation, converted
into each other without loss, and bad records refused naming where they are (or skipped and counted)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from swinkit.cli import main
from swinkit.data.instance_formats import convert_instances, to_coco_dict
from swinkit.data.instances import InstanceDataset, load_instances

SIZES = {"a.png": (40, 30), "b.png": (50, 20), "c.png": (24, 24)}  # file -> (width, height)


def rect_mask(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def write_images(root: Path) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(root / "images" / name)


def coco_file(root: Path) -> tuple[Path, dict]:
    """Three images; categories out of id order; a polygon, an RLE, an uncompressed RLE, a crowd object and
    an ignored one. Returns the file and the masks each annotation id stands for."""
    write_images(root)
    rle = mask_utils.encode(np.asfortranarray(rect_mask(20, 50, 30, 2, 45, 18)))
    uncompressed = {"size": [24, 24], "counts": [24 * 4 + 4, 8, 16, 8, 16, 8, 420]}  # column-major
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 4, 20, 10], "iscrowd": 0,
         "segmentation": [[5, 4, 25, 4, 25, 14, 5, 14]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [28, 10, 10, 15], "iscrowd": 1,
         "segmentation": [[28, 10, 38, 10, 38, 25, 28, 25]]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [30, 2, 15, 16], "iscrowd": 0,
         "segmentation": {"size": [20, 50], "counts": rle["counts"].decode()}},
        {"id": 4, "image_id": 3, "category_id": 7, "bbox": [4, 4, 3, 8], "iscrowd": 0,
         "segmentation": uncompressed},
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [1, 1, 5, 5], "ignore": 1, "segmentation": []},
    ]  # fmt: skip
    for ann in anns:
        ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, (w, h)) in
                   enumerate(SIZES.items())],
        "annotations": anns,
        "categories": [{"id": 7, "name": "carton"}, {"id": 3, "name": "can"}],
    }  # fmt: skip
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, data


def assert_same(a: InstanceDataset, b: InstanceDataset) -> None:
    assert a.labels == b.labels and len(a) == len(b)
    for x, y in zip(a.images, b.images, strict=True):
        assert (x.width, x.height, Path(x.path()).resolve()) == (y.width, y.height, Path(y.path()).resolve())
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-9)
        assert np.array_equal(x.labels, y.labels) and np.array_equal(x.iscrowd, y.iscrowd)
        assert np.array_equal(x.masks(), y.masks())


def test_coco_labels_boxes_and_masks_as_mmdet_reads_them(tmp_path):
    path, _ = coco_file(tmp_path)
    dataset = load_instances(path)
    assert dataset.labels == ("can", "carton") and dataset.category_ids == (3, 7)  # cat_ids sorted
    first, second, third = dataset.images
    assert first.labels.tolist() == [1, 0] and first.iscrowd.tolist() == [False, True]
    np.testing.assert_array_equal(first.boxes[0], [5, 4, 25, 14])  # xywh -> xyxy
    masks = first.masks()
    assert masks.shape == (2, 30, 40) and masks[0, 4:14, 5:25].all() and masks[0].sum() == 200
    assert np.array_equal(second.masks()[0], rect_mask(20, 50, 30, 2, 45, 18).astype(bool))
    assert third.masks()[0].sum() == 3 * 8 and len(third) == 1  # the ignored annotation is left out
    assert dataset.has_masks and "3 images, 4 objects (masks), 2 labels" in dataset.summary("val")


def test_azure_jsonl_normalised_objects_and_px_sizes(tmp_path):
    write_images(tmp_path)
    line = {"image_url": "azureml://datastores/x/paths/fridge/images/a.png",
            "image_details": {"format": "png", "width": "40px", "height": "30px"},
            "label": [{"label": "can", "topX": 0.25, "topY": 0.5, "bottomX": 0.5, "bottomY": 1.0, "isCrowd": 0,
                       "polygon": [[0.25, 0.5, 0.5, 0.5, 0.5, 1.0, 0.25, 1.0]]}]}  # fmt: skip
    boxes_only = {"image_url": "images/b.png", "label": [{"label": "milk", "topX": 0.1, "topY": 0.1,
                                                          "bottomX": 0.5, "bottomY": 0.9, "isCrowd": "false"}]}  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(line) + "\n\n" + json.dumps(boxes_only) + "\n")
    dataset = load_instances(path)
    assert dataset.labels == ("can", "milk")
    first, second = dataset.images
    np.testing.assert_allclose(first.boxes, [[10, 15, 20, 30]])
    assert first.masks()[0].sum() == 10 * 15
    assert (second.width, second.height) == (50, 20)  # no image_details: the file's size
    assert second.iscrowd.tolist() == [False]  # "false" as text is not a crowd
    assert not second.has_masks and not dataset.has_masks
    with pytest.raises(ValueError, match="line 3: object 0 has a box only"):
        second.masks()


def test_coco_and_its_azure_conversion_are_the_same_dataset(tmp_path):
    path, _ = coco_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert-data", str(path), str(out / "train.jsonl")]) == 0
    converted = load_instances(out / "train.jsonl")
    assert_same(load_instances(path), converted)
    assert main(["convert-data", str(out / "train.jsonl"), str(out / "back.json")]) == 0
    back = load_instances(out / "back.json")
    assert_same(converted, back)
    assert json.loads((out / "back.json").read_text())["images"][0]["file_name"] == "../images/a.png"


def test_azure_to_coco_dict_areas_are_mask_areas(tmp_path):
    path, _ = coco_file(tmp_path)
    convert_instances(path, tmp_path / "x.jsonl")
    coco = to_coco_dict(load_instances(tmp_path / "x.jsonl"))
    assert [a["area"] for a in coco["annotations"]] == [200.0, 150.0, 240.0, 24.0]
    assert [c["name"] for c in coco["categories"]] == ["can", "carton"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"][0].update(bbox=[5, 4, 0.5, 10]), r"annotation id 1 .*degenerate"),
        (lambda d: d["annotations"][0].update(segmentation=[[5, 4, 95, 4, 25, 14]]),
         r"annotation id 1 .*polygon lies outside the 40x30 image"),
        (lambda d: d["annotations"][0].update(segmentation=[[5, 4, 25, 4]]), r"annotation id 1 .*at least 3"),
        (lambda d: d["annotations"][2]["segmentation"].update(size=[21, 50]),
         r"annotation id 3 .*RLE is \[21, 50\].*\[20, 50\]"),
        (lambda d: d["annotations"][1].update(category_id=99), r"annotation id 2 .*category_id 99"),
        (lambda d: d["images"][1].update(file_name="missing.png"), r"image id 2: its image missing.png is not found"),
        (lambda d: d["images"][0].update(width=41), r"image id 1: its image .*a.png is 40x30 but .* 41x30"),
    ],
    ids=["degenerate-box", "polygon-outside", "short-polygon", "rle-size", "category", "missing", "size"],
)  # fmt: skip
def test_bad_coco_records_are_named_or_skipped_and_counted(tmp_path, edit, message):
    path, data = coco_file(tmp_path)
    bad = copy.deepcopy(data)
    edit(bad)
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message):
        load_instances(path)
    skipped = load_instances(path, skip_invalid=True)
    assert skipped.skipped == 1 and "1 bad records skipped" in skipped.summary()
    left = (len(skipped), sum(len(i) for i in skipped.images))
    assert left == ((2, 3) if "image id 2" in message else (2, 2) if "image id 1" in message else (3, 3))


def test_bad_azure_lines_are_named(tmp_path):
    write_images(tmp_path)
    good = {
        "image_url": "images/a.png",
        "label": [
            {
                "label": "can",
                "topX": 0.1,
                "topY": 0.1,
                "bottomX": 0.5,
                "bottomY": 0.5,
                "polygon": [[0.1, 0.1, 0.5, 0.1, 0.5, 0.5]],
            }
        ],
    }
    outside = copy.deepcopy(good)
    outside["label"][0]["polygon"] = [[0.1, 0.1, 1.5, 0.1, 0.5, 0.5]]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps(good), "{not json", json.dumps(outside)]) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 is not JSON"):
        load_instances(path)
    skipped = load_instances(path, skip_invalid=True)
    assert skipped.skipped == 2 and [len(i) for i in skipped.images] == [1, 0]
    path.write_text("\n".join([json.dumps(good), json.dumps(outside)]) + "\n")
    with pytest.raises(ValueError, match=r"line 2 object 0: a polygon lies outside the 40x30 image"):
        load_instances(path)


def test_an_unknown_label_in_evaluation_is_an_error(tmp_path):
    path, _ = coco_file(tmp_path)
    with pytest.raises(ValueError, match=r"annotation id 2 .*label 'can' is not one of the model's labels"):
        load_instances(path, labels=["carton", "bottle"])
    dataset = load_instances(path, labels=["carton", "bottle", "can"])
    assert dataset.labels == ("carton", "bottle", "can") and dataset.category_ids == (7, 8, 3)
    assert dataset.images[0].labels.tolist() == [0, 2]


def test_convert_data_cli_reports_bad_records(tmp_path, capsys):
    path, data = coco_file(tmp_path)
    data["annotations"][0]["bbox"] = [5, 4, 0, 0]
    path.write_text(json.dumps(data))
    assert main(["convert-data", str(path), str(tmp_path / "o.jsonl")]) == 2
    assert "annotation id 1 (image id 1): its box is degenerate" in capsys.readouterr().err
    assert main(["convert-data", "--skip-bad", str(path), str(tmp_path / "o.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "3 objects, 2 labels written" in err and "1 bad records skipped" in err

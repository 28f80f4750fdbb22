"""Reading labelled images from class folders, CSV and Azure JSONL; splits; reproducible samples."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.data.augment import TrainTransform
from swinkit.data.datasets import TrainImages, load_dataset, split


def _image(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), value, np.uint8)).save(path)


@pytest.fixture
def fridge(tmp_path):
    """The fridgeObjects layout: one folder per class."""
    for label, count in (("can", 4), ("carton", 3), ("milk_bottle", 5)):
        for i in range(count):
            _image(tmp_path / "fridge" / label / f"{i}.jpg", 20 * i)
    (tmp_path / "fridge" / "can" / "notes.txt").write_text("not an image")
    return tmp_path / "fridge"


def test_image_folder_labels_counts_and_summary(fridge):
    data = load_dataset(fridge)
    assert data.labels == ("can", "carton", "milk_bottle")
    assert not data.multi_label and len(data) == 12
    assert data.class_counts() == {"can": 4, "carton": 3, "milk_bottle": 5}
    summary = data.summary("train")
    assert "12 images, 3 classes (multi-class)" in summary and "milk_bottle" in summary


def test_csv_with_header_and_multi_label_cells(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text(
        'filename,labels\na.png,can carton\nimages/b.png,milk_bottle\nc.png,"can;water"\n'
    )
    data = load_dataset(tmp_path / "labels.csv")
    assert data.multi_label
    assert data.labels == ("can", "carton", "milk_bottle", "water")
    assert data.targets == [(0, 1), (2,), (0, 3)]


def test_azure_jsonl_single_and_multi_label(tmp_path):
    _image(tmp_path / "images" / "1.jpg")
    _image(tmp_path / "images" / "2.jpg")
    rows = [
        {"image_url": "azureml://datastores/blob/paths/fridge/images/1.jpg", "label": "can"},
        {"image_url": "images/2.jpg", "label": "carton"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset(tmp_path / "train.jsonl")
    assert not data.multi_label and data.labels == ("can", "carton")
    assert data.paths[0].endswith("1.jpg")
    rows[1]["label"] = ["can", "carton"]
    (tmp_path / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    multi = load_dataset(tmp_path / "multi.jsonl")
    assert multi.multi_label and multi.targets == [(0,), (0, 1)]


def test_missing_image_and_unknown_label_are_clear_errors(tmp_path, fridge):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image_url": "nowhere.jpg", "label": "can"}))
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        load_dataset(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="milk_bottle"):
        load_dataset(fridge, labels=("can", "carton"))


def test_split_is_seeded_and_stratified(fridge):
    data = load_dataset(fridge)
    train, val = split(data, 0.4, seed=3)
    again_train, again_val = split(data, 0.4, seed=3)
    assert val.paths == again_val.paths and train.paths == again_train.paths
    assert sorted(train.paths + val.paths) == sorted(data.paths)
    assert val.class_counts() == {"can": 2, "carton": 1, "milk_bottle": 2}
    assert split(data, 0.4, seed=4)[1].paths != val.paths


def test_training_samples_depend_only_on_seed_epoch_and_index(fridge):
    data = load_dataset(fridge)
    transform = TrainTransform(size=16, randaugment_ops=2, random_erasing=0.5)
    first, second = TrainImages(data, transform, seed=0), TrainImages(data, transform, seed=0)
    second[5]  # drawing another sample first changes nothing
    x, y = first[3]
    assert x.shape == (3, 16, 16) and y.item() == data.targets[3][0]
    assert torch.equal(x, second[3][0])
    second.set_epoch(1)
    assert not torch.equal(x, second[3][0])


def test_labels_keep_their_spaces_unless_the_column_is_a_labels_list(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    (tmp_path / "single.csv").write_text(
        "path,label\na.png,golden retriever\nb.png,tabby cat\nc.png,tabby cat\n"
    )
    data = load_dataset(tmp_path / "single.csv")
    assert not data.multi_label and data.labels == ("golden retriever", "tabby cat")
    (tmp_path / "multi.csv").write_text('path,label\na.png,"golden retriever; tabby cat"\nb.png,tabby cat\n')
    assert load_dataset(tmp_path / "multi.csv").targets == [(0, 1), (1,)]


def test_spreadsheet_byte_order_marks_are_ignored(tmp_path):
    for name in ("a.png", "b.png"):
        _image(tmp_path / name)
    (tmp_path / "bom.csv").write_bytes("\ufeffpath,label\na.png,can\nb.png,milk\n".encode())
    assert load_dataset(tmp_path / "bom.csv").labels == ("can", "milk")
    lines = [
        json.dumps({"image_url": "a.png", "label": "can"}),
        json.dumps({"image_url": "b.png", "label": "milk"}),
    ]
    (tmp_path / "bom.jsonl").write_bytes(("\ufeff" + "\n".join(lines)).encode())
    assert load_dataset(tmp_path / "bom.jsonl").labels == ("can", "milk")


def test_a_single_class_is_refused_before_training(tmp_path):
    _image(tmp_path / "one" / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"found 1 class \(cat\); a classifier needs at least 2"):
        load_dataset(tmp_path / "one")


def test_an_empty_class_folder_is_named_in_the_error(fridge):
    (fridge / "zebra").mkdir()
    with pytest.raises(ValueError, match="class folders without images: zebra"):
        load_dataset(fridge)


def test_a_dataset_none_of_whose_images_decodes_is_refused(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "bad" / label).mkdir(parents=True)
        (tmp_path / "bad" / label / "a.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"none of the 2 images tried could be read \(first: .*a\.jpg"):
        load_dataset(tmp_path / "bad")
    _image(tmp_path / "bad" / "dog" / "b.png")
    assert len(load_dataset(tmp_path / "bad")) == 3

"""One input-record reader for train, evaluate and batch: formats, multi-label cells, the extension list."""

import json

import numpy as np
import pytest
from PIL import Image

from swinkit.batch import iter_inputs, load_item
from swinkit.data.datasets import load_dataset
from swinkit.data.decode import ALLOWED_FORMATS, IMAGE_EXTENSIONS


def _image(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), value, np.uint8)).save(path)
    return path


def test_every_listed_extension_is_a_format_the_decoder_opens_and_tga_is_not_listed(tmp_path):
    Image.init()
    registered = Image.registered_extensions()
    assert {registered[ext] for ext in IMAGE_EXTENSIONS} <= set(ALLOWED_FORMATS)
    _image(tmp_path / "plain" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain" / "b.tga")
    assert [r.id for r in iter_inputs(tmp_path / "plain")] == [str(tmp_path / "plain" / "a.png")]
    _image(tmp_path / "classes" / "cat" / "a.png")
    _image(tmp_path / "classes" / "dog" / "b.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "classes" / "dog" / "c.tga")
    assert len(load_dataset(tmp_path / "classes")) == 2


def test_batch_reads_the_azure_jsonl_and_the_csv_that_training_reads(tmp_path):
    _image(tmp_path / "images" / "1.jpg")
    _image(tmp_path / "images" / "2.jpg", 30)
    rows = [
        {"image_url": "azureml://datastores/blob/paths/fridge/images/1.jpg", "label": "can"},
        {"image_url": "images/2.jpg", "label": ["can", "carton"]},
    ]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "val.csv").write_text("filename,labels\n1.jpg,can\nimages/2.jpg,can carton\n")
    for name in ("val.jsonl", "val.csv"):
        trained = load_dataset(tmp_path / name)
        assert trained.multi_label and trained.targets == [(0,), (0, 1)]
        records = list(iter_inputs(tmp_path / name))
        assert [r.error for r in records] == [None, None]
        decoded = [np.asarray(load_item(r)) for r in records]
        assert [d[0, 0, 0] for d in decoded] == [100, 30]


def test_a_label_cell_holding_several_labels_of_other_rows_is_refused(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    (tmp_path / "fridge.csv").write_text("path,label\na.png,can\nb.png,carton\nc.png,can carton\n")
    with pytest.raises(ValueError, match=r"row 2: the label 'can carton' reads as several labels") as e:
        load_dataset(tmp_path / "fridge.csv")
    assert "head the column 'labels'" in str(e.value)
    (tmp_path / "fridge.csv").write_text("path,labels\na.png,can\nb.png,carton\nc.png,can carton\n")
    assert load_dataset(tmp_path / "fridge.csv").targets == [(0,), (1,), (0, 1)]
    (tmp_path / "dogs.csv").write_text("path,label\na.png,golden retriever\nb.png,retriever\nc.png,pug\n")
    assert load_dataset(tmp_path / "dogs.csv").labels == ("golden retriever", "pug", "retriever")


def test_a_headerless_csv_whose_first_label_is_a_column_name_is_still_data(tmp_path):
    for name in ("a.png", "b.png"):
        _image(tmp_path / name)
    (tmp_path / "plain.csv").write_text("a.png,label\nb.png,cat\n")
    assert load_dataset(tmp_path / "plain.csv").labels == ("cat", "label")

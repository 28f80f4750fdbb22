"""`swinkit predict` and the Predictor give what transformers' image-classification pipeline gives."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from image_samples import awkward_files, bad_files, photo
from PIL import Image
from test_preprocess import SWIN_224, SWINV2_256
from transformers import pipeline

import swinkit
from swinkit.cli import main
from swinkit.data.decode import ImageDecodeError
from swinkit.inference import Prediction, Predictor

LABELS = ["tabby", "rocket", "coffee", "astronaut"]
PHOTOS = ["chelsea.png", "rocket.jpg", "coffee.png", "astronaut.png", "camera.png"]


def _hf_checkpoint(folder, version: int, processor: dict, problem_type: str | None = None):
    """A random-init transformers Swin/Swinv2 classifier (every weight perturbed), saved with its processor."""
    common = dict(
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 2],
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        problem_type=problem_type,
    )
    if version == 1:
        config = transformers.SwinConfig(image_size=224, window_size=7, **common)
        model = transformers.SwinForImageClassification(config)
    else:
        config = transformers.Swinv2Config(
            image_size=256, window_size=8, pretrained_window_sizes=[0, 0], **common
        )
        model = transformers.Swinv2ForImageClassification(config)
    generator = torch.Generator().manual_seed(version)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    files = awkward_files(tmp_path_factory.mktemp("awkward"))
    return [photo(name) for name in PHOTOS] + [files[k] for k in ("exif6", "cmyk", "palette", "gif")]


def _pipeline_probs(folder, paths) -> list[dict[str, float]]:
    classify = pipeline("image-classification", model=str(folder), image_processor=None)
    assert classify.image_processor.backend == "pil"
    outputs = classify([str(p) for p in paths], top_k=len(LABELS))
    return [{entry["label"]: entry["score"] for entry in output} for output in outputs]


@pytest.mark.parametrize(
    "version, processor, problem_type",
    [(1, SWIN_224, None), (2, SWINV2_256, None), (1, SWIN_224, "multi_label_classification")],
    ids=["swin-softmax", "swinv2-softmax", "swin-multilabel-sigmoid"],
)
def test_cli_output_matches_the_transformers_pipeline(tmp_path, images, version, processor, problem_type):
    folder = _hf_checkpoint(tmp_path / "model", version, processor, problem_type)
    out = tmp_path / "out.jsonl"
    assert (
        main(
            ["predict", "--model", str(folder), *map(str, images), "--output", str(out), "--batch-size", "4"]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in images]
    expected = _pipeline_probs(folder, images)
    for row, reference in zip(rows, expected, strict=True):
        assert row["labels"] == LABELS
        assert max(abs(p - reference[label]) for label, p in zip(LABELS, row["probs"], strict=True)) < 1e-4
        total = sum(row["probs"])
        assert abs(total - 1) < 1e-5 if problem_type is None else abs(total - 1) > 1e-3


def test_predictor_returns_typed_batched_results(tmp_path, images):
    predictor = Predictor.from_pretrained(_hf_checkpoint(tmp_path / "m", 1, SWIN_224), batch_size=3)
    assert not predictor.model.training and predictor.labels == LABELS
    results = predictor.predict(images[:4], top_k=2)
    assert all(isinstance(r, Prediction) for r in results) and len(results) == 4
    one_by_one = [predictor.predict([path])[0] for path in images[:4]]
    for batched, single in zip(results, one_by_one, strict=True):
        assert max(abs(a - b) for a, b in zip(batched.probs, single.probs, strict=True)) < 1e-5
        assert len(batched.top) == 2 and batched.top[0][1] == max(batched.probs)
        assert batched.to_azure() == {"probs": batched.probs, "labels": LABELS}
    assert results[0].source == str(images[0])
    from_pil = predictor.predict([Image.open(images[0])])[0]
    assert max(abs(a - b) for a, b in zip(from_pil.probs, results[0].probs, strict=True)) < 1e-6


def test_threshold_and_multi_label_selection(tmp_path):
    predictor = Predictor.from_pretrained(
        _hf_checkpoint(tmp_path / "m", 1, SWIN_224, "multi_label_classification")
    )
    prediction = predictor.make_prediction([0.9, 0.2, 0.6, 0.5])
    assert prediction.top == [("tabby", 0.9), ("coffee", 0.6), ("astronaut", 0.5)]  # every label >= 0.5
    assert predictor.make_prediction([0.9, 0.2, 0.6, 0.5], threshold=0.7).top == [("tabby", 0.9)]
    predictor.problem_type = "single_label_classification"
    assert predictor.make_prediction([0.1, 0.2, 0.6, 0.1], top_k=2, threshold=0.15).top == [
        ("coffee", 0.6),
        ("rocket", 0.2),
    ]


def test_bad_file_gets_an_error_row_and_the_good_ones_their_predictions(tmp_path, images):
    folder = _hf_checkpoint(tmp_path / "m", 1, SWIN_224)
    bad = bad_files(tmp_path / "bad")
    inputs = [images[0], bad["truncated"], images[1], bad["text"]]
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(folder), *map(str, inputs), "--output", str(out)]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in inputs]
    assert "probs" in rows[0] and "probs" in rows[2]
    assert "truncated.jpg" in rows[1]["error"] and "notes.png" in rows[3]["error"]
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        Predictor.from_pretrained(folder).predict([bad["truncated"]])


def test_table_on_stdout_and_visualizations(tmp_path, images, capsys):
    folder = _hf_checkpoint(tmp_path / "m", 1, SWIN_224)
    visual = tmp_path / "visual"
    assert (
        main(
            [
                "predict",
                "--model",
                str(folder),
                str(images[0]),
                str(images[1]),
                "--top-k",
                "3",
                "--visualize",
                str(visual),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(images[0]) and len(table) == 8  # a path line and three label lines per image
    assert all(line.startswith("  ") and line.rstrip().endswith("%") for line in table[1:4])
    assert sorted(p.name for p in visual.iterdir()) == ["chelsea.png", "rocket.png"]


def test_aspect_keeping_preprocessing_predicts_images_of_different_shapes(tmp_path):
    model = swinkit.create_model("swinv2_micro", labels=["a", "b", "c"])
    swinkit.save_pretrained(model, tmp_path / "m")
    config = {"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 64}, "resample": 3}
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps(config))
    wide, tall = Image.new("RGB", (130, 64), (200, 10, 10)), Image.new("RGB", (64, 100), (10, 10, 200))
    predictor = Predictor.from_pretrained(tmp_path / "m")
    together = predictor.predict([wide, tall, wide])
    alone = [predictor.predict([image])[0] for image in (wide, tall, wide)]
    for got, expected in zip(together, alone, strict=True):
        assert got.probs == pytest.approx(expected.probs, abs=1e-6)

"""``GraphSpec``: the one graph interface a task's predictor gives the exporter and the on-the-fly tracer."""

from __future__ import annotations

import pytest
import torch

import swinkit
from swinkit.data.preprocess import ImageProcessor
from swinkit.inference import Predictor
from swinkit.presets import Preprocessing
from swinkit.runtime.graph import GraphSpec, check_static


def _classifier(tmp_path) -> Predictor:
    model = swinkit.create_model("swin_micro", image_size=32, labels=["a", "b", "c"])
    folder = swinkit.save_pretrained(model, tmp_path / "m", preprocessing=Preprocessing(image_size=(32, 32)))
    return Predictor.from_pretrained(folder)


def test_the_classifier_graph_returns_its_logits_as_a_tuple_on_a_prepared_example(tmp_path):
    predictor = _classifier(tmp_path)
    spec = predictor.export_graph()
    assert (spec.output_names, spec.dynamic_hw, tuple(spec.example.shape)) == (
        ("logits",),
        False,
        (1, 3, 32, 32),
    )
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = spec.module(pixels)
        assert isinstance(outputs, tuple) and len(outputs) == 1
        assert torch.equal(outputs[0], predictor.model(pixels))


def test_a_static_graph_of_a_keep_ratio_preprocessing_and_bad_examples_are_refused(tmp_path):
    predictor = _classifier(tmp_path)
    spec = predictor.export_graph()
    keep_ratio = ImageProcessor.from_preprocessor_config(
        {"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 64}, "resample": 3}
    )
    with pytest.raises(ValueError, match="this model's preprocessing keeps the aspect ratio"):
        check_static(spec, keep_ratio)
    check_static(spec, predictor.prepare)
    with pytest.raises(ValueError, match=r"one prepared image \(1, 3, H, W\), not \(2, 3, 32, 32\)"):
        GraphSpec(spec.module, ("logits",), torch.zeros(2, 3, 32, 32), dynamic_hw=False)

"""``swinkit evaluate``: metrics and plots of a saved model, consistent with ``swinkit predict``."""

import json

import pytest
import torch
from test_train import make_colors, make_shapes

from swinkit.cli import main
from swinkit.engine.evaluate import evaluate_model
from swinkit.inference import Predictor
from swinkit.loading import save_pretrained
from swinkit.models.factory import create_model


@pytest.fixture
def colour_model(tmp_path):
    torch.manual_seed(3)
    model = create_model("swinv2_micro", labels=["blue", "green", "red"], image_size=32)
    return save_pretrained(model, tmp_path / "model", preprocessing={"size": {"height": 32, "width": 32}})


def test_evaluate_command_writes_metrics_and_plots(tmp_path, colour_model, capsys):
    data = make_colors(tmp_path / "data", 4)
    assert (
        main(
            ["evaluate", "--model", str(colour_model), "--data", str(data), "--output", str(tmp_path / "ev")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "12 images: accuracy" in out
    assert any(line.startswith("green") and line.split()[-1] == "4" for line in out.splitlines())  # per-class
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_samples"] == 12 and metrics["primary_metric"] == "accuracy"
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert (tmp_path / "ev" / "plots" / "confusion_matrix.png").is_file()
    assert (tmp_path / "ev" / "plots" / "pr_curves.png").is_file()


def test_evaluation_agrees_with_predict(tmp_path, colour_model):
    data = make_colors(tmp_path / "data", 4)
    report = evaluate_model(colour_model, data)
    predictor = Predictor.from_pretrained(colour_model)
    paths = sorted(data.glob("*/*.png"))
    predictions = predictor.predict(paths)
    correct = sum(p.top[0][0] == path.parent.name for p, path in zip(predictions, paths))
    assert report["accuracy"] == pytest.approx(correct / len(paths))


def test_multi_label_model_is_scored_with_iou(tmp_path):
    labels = make_shapes(tmp_path / "shapes", 12, seed=0)
    model = create_model("swinv2_micro", labels=["circle", "square", "triangle"], image_size=32)
    model.config = model.config.replace(problem_type="multi_label_classification")
    save_pretrained(model, tmp_path / "model")
    report = evaluate_model(tmp_path / "model", labels)
    assert report["primary_metric"] == "iou" and 0.0 <= report["iou"] <= 1.0 and "map" in report


def test_labels_the_model_does_not_know_are_a_clear_error(tmp_path, colour_model):
    data = make_colors(tmp_path / "data", 1)
    (data / "purple").mkdir()
    (data / "red" / "0.png").rename(data / "purple" / "0.png")
    assert main(["evaluate", "--model", str(colour_model), "--data", str(data)]) == 2

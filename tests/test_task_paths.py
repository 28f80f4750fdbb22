"""predict / batch / serve share one path for every task: a task only this test knows is run by all three.

The mean-colour task registered here has its own saved model, predictor and result; nothing in
``swinkit.cli.predict``, ``swinkit.batch`` or ``swinkit.serve`` names it, yet all three run it, and they refuse a
masked-image-modeling model (a task without predictions) in one sentence.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel
from serve_helpers import b64, make_model_dir, ready_client

import swinkit
import swinkit.batch
import swinkit.cli.batch
import swinkit.cli.evaluate
import swinkit.cli.predict
import swinkit.engine.evaluate
import swinkit.serve.app
import swinkit.serve.service
import swinkit.serve.state
from swinkit.checkpoint_io import save_torch
from swinkit.cli import main
from swinkit.inference import load_predictor, task_of_source
from swinkit.models.mim import build_mim_model, save_mim_pretrained
from swinkit.presets import get_mim_preset
from swinkit.serve import ServeSettings, create_app
from swinkit.tasks import ClassificationTask, register, unregister
from swinkit.tasks.base import Task, run_by_shape

MIM_REFUSAL = (
    "a masked-image-modeling model has no predictions; fine-tune it with swinkit train --pretrained RUN"
)


class ColourResult(BaseModel):
    """The served mean colour of one image: (red, green, blue) in [0, 1]."""

    colour: list[float]


class MeanColour:
    def __init__(self, colour: list[float]) -> None:
        self.colour = colour

    def to_azure(self) -> dict:
        return {"colour": self.colour}

    def lines(self) -> list[str]:
        return ["colour " + " ".join(f"{c:.3f}" for c in self.colour)]

    def save_image(self, image: Image.Image, path) -> Path:
        Image.new("RGB", (4, 4), tuple(round(255 * c) for c in self.colour)).save(path)
        return Path(path)


class MeanColourPredictor:
    """The model is one gain per channel (saved as gain.pt): colour = gain * mean pixel."""

    azure_task = "image-mean-colour"
    response_model = ColourResult
    labels: list[str] = []

    def __init__(self, gain: torch.Tensor, batch_size: int) -> None:
        self.gain, self.batch_size, self.batches = gain, batch_size, []

    def prepare(self, image: Image.Image) -> torch.Tensor:
        side = 8 if image.width >= image.height else 6  # two shapes, so equal shapes must be grouped
        pixels = np.asarray(image.resize((side, 8)), dtype=np.float32) / 255  # (8, side, 3)
        return torch.from_numpy(pixels).permute(2, 0, 1)  # (3, 8, side)

    def infer(self, pixels) -> list[MeanColour]:
        def run(batch: torch.Tensor) -> list[MeanColour]:
            self.batches.append(len(batch))
            colours = batch.mean(dim=(2, 3)) * self.gain  # (B, 3)
            return [MeanColour(row) for row in colours.tolist()]

        return run_by_shape(pixels, run)

    def info(self) -> dict:
        return {"preprocessing": {"size": 8}}

    def fingerprint(self) -> tuple[str, str]:
        digest = hashlib.sha256(self.gain.numpy().tobytes()).hexdigest()[:16]
        return digest, digest


class MeanColourTask(Task):
    """Only its inference side: the trainer's side of a task is test_tasks.py's (never instantiated here)."""

    name = "mean_colour"
    primary_metric = "mae"

    @classmethod
    def matches(cls, config_dict):
        return config_dict.get("architectures") == ["MeanColour"]

    @classmethod
    def predictor(cls, source, *, device="cpu", batch_size=16, top_k=None, threshold=None):
        gain = torch.load(Path(source) / "gain.pt", weights_only=True)
        return MeanColourPredictor(gain, batch_size)

    @classmethod
    def evaluate_saved(cls, source, data, *, output=None, **_):
        predictor = cls.predictor(source)
        paths = sorted(Path(data).glob("*.png"))
        found = predictor.infer([predictor.prepare(Image.open(p).convert("RGB")) for p in paths])
        errors = [
            abs(a - b) for path, r in zip(paths, found) for a, b in zip(r.colour, expected_colour(path))
        ]
        return {"primary_metric": "mae", "mae": float(sum(errors) / len(errors)), "num_samples": len(paths)}


@pytest.fixture
def colour_task():
    register(MeanColourTask)
    yield MeanColourTask
    unregister(MeanColourTask.name)


def colour_model(root: Path, gain=(1.0, 0.5, 2.0)) -> Path:
    folder = root / "colour_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["MeanColour"]}))
    torch.save(torch.tensor(gain), folder / "gain.pt")
    return folder


def colour_images(root: Path) -> list[Path]:
    folder = root / "images"
    folder.mkdir()
    paths = []
    for i, (size, rgb) in enumerate(
        [((16, 12), (200, 10, 60)), ((10, 20), (0, 255, 30)), ((32, 8), (90, 90, 90))]
    ):
        paths.append(folder / f"{i}.png")
        Image.new("RGB", size, rgb).save(paths[-1])
    return paths


def expected_colour(path: Path, gain=(1.0, 0.5, 2.0)) -> list[float]:
    rgb = Image.open(path).getpixel((0, 0))
    return [c / 255 * g for c, g in zip(rgb, gain, strict=True)]


def assert_colours(rows: list[dict], paths: list[Path]) -> None:
    assert len(rows) == len(paths)
    for row, path in zip(rows, paths, strict=True):
        assert set(row) == {"image", "colour"}
        np.testing.assert_allclose(row["colour"], expected_colour(path), atol=1e-5)


def test_predict_runs_a_task_it_does_not_know(tmp_path, colour_task, capsys):
    model, images = colour_model(tmp_path), colour_images(tmp_path)
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    assert main(["predict", "--model", str(model), *map(str, images), "--output", str(out),
                 "--visualize", str(drawn)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert_colours(rows, images)
    assert sorted(p.name for p in drawn.iterdir()) == ["0.png", "1.png", "2.png"]
    assert Image.open(drawn / "1.png").getpixel((0, 0)) == (0, 128, 60)
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(images[0])]) == 0
    assert capsys.readouterr().out == f"{images[0]}\n  colour 0.784 0.020 0.471\n"


def test_batch_runs_a_task_it_does_not_know_and_resumes_it(tmp_path, colour_task):
    model, images = colour_model(tmp_path), colour_images(tmp_path)
    out = tmp_path / "rows.jsonl"
    command = ["batch", "--model", str(model), "--input", str(images[0].parent), "--output", str(out),
               "--workers", "0", "--no-progress", "--batch-size", "2"]  # fmt: skip
    assert main(command) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert_colours(rows, images)
    assert main(command) == 0 and out.read_text().count("\n") == 3  # resumed: nothing scored twice
    (tmp_path / "other").mkdir()
    other = colour_model(tmp_path / "other", gain=(1.0, 1.0, 1.0))
    assert main(["batch", "--model", str(other), *command[3:]]) == 2  # another model's output is refused


def test_the_endpoint_serves_a_task_it_does_not_know(tmp_path, colour_task):
    model, images = colour_model(tmp_path), colour_images(tmp_path)
    with ready_client(create_app(ServeSettings(model=str(model), max_batch_size=8))) as client:
        info = client.get("/info").json()
        assert info["swinkit_task"] == "mean_colour" and info["task"] == "image-mean-colour"
        assert info["labels"] == [] and info["preprocessing"] == {"size": 8}
        body = {"input_data": [b64(p.read_bytes()) for p in images]}
        answer = client.post("/score", json=body)
        assert answer.status_code == 200, answer.text
        assert_colours([{"image": str(p), **r} for p, r in zip(images, answer.json(), strict=True)], images)
        schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["type"] == "array" and ok["items"] == {"$ref": "#/components/schemas/ColourResult"}
    assert schema["components"]["schemas"]["ColourResult"]["required"] == ["colour"]


def test_a_result_off_its_schema_is_not_served(tmp_path, colour_task, monkeypatch):
    """The endpoint validates each result against the task's response model, never answers an ad-hoc shape."""
    model = colour_model(tmp_path)
    monkeypatch.setattr(MeanColour, "to_azure", lambda self: {"color": self.colour})
    service = swinkit.serve.service.TaskService.load(str(model))
    with pytest.raises(ValueError, match="colour"):
        service.infer([torch.zeros(3, 8, 8)])


def test_classification_is_served_as_its_task(tmp_path):
    model = make_model_dir(tmp_path)
    assert task_of_source(model) is ClassificationTask
    with ready_client(create_app(ServeSettings(model=str(model)))) as client:
        info = client.get("/info").json()
        schema = client.get("/openapi.json").json()
    assert info["swinkit_task"] == "classification" and info["task"] == "image-classification"
    assert info["problem_type"] == "single_label_classification"
    ok = schema["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["items"] == {"$ref": "#/components/schemas/ClassificationResult"}


def test_a_bare_checkpoint_without_description_is_a_classifier(tmp_path):
    model = swinkit.create_model("swin_micro", num_classes=3)
    save_torch(model.state_dict(), tmp_path / "bare.pth")
    assert task_of_source(tmp_path / "bare.pth") is ClassificationTask


@pytest.fixture(scope="module")
def mim_model(tmp_path_factory):
    model = build_mim_model(get_mim_preset("swinv2_micro_simmim").config)
    return save_mim_pretrained(model, tmp_path_factory.mktemp("mim") / "run")


def test_predict_and_batch_refuse_a_mim_model_in_one_sentence(tmp_path, mim_model, capsys):
    image = colour_images(tmp_path)[0]
    assert main(["predict", "--model", str(mim_model), str(image)]) == 2
    assert capsys.readouterr().err == f"swinkit predict: error: {MIM_REFUSAL}\n"
    out = tmp_path / "rows.jsonl"
    assert main(["batch", "--model", str(mim_model), "--input", str(image.parent), "--output", str(out)]) == 2
    assert capsys.readouterr().err == f"swinkit batch: error: {MIM_REFUSAL}\n" and not out.exists()


def test_evaluate_runs_a_task_it_does_not_know(tmp_path, colour_task, capsys):
    images = colour_images(tmp_path)
    assert main(["evaluate", "--model", str(colour_model(tmp_path)), "--data", str(images[0].parent)]) == 0
    out = capsys.readouterr().out
    assert "mae: 0.0000" in out and "num_samples" in out


def test_evaluate_refuses_a_mim_model_in_one_sentence(tmp_path, mim_model, capsys):
    image = colour_images(tmp_path)[0]
    assert main(["evaluate", "--model", str(mim_model), "--data", str(image.parent)]) == 2
    assert "masked-image-modeling model has no evaluation of its own" in capsys.readouterr().err


@contextlib.contextmanager
def health_after_loading(app) -> Iterator:
    """The first /health answer once the app's background load has finished or failed."""
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while app.state.serve.error is None and not app.state.serve.ready:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield client.get("/health")


def test_a_mim_training_checkpoint_is_refused_by_its_embedded_description(tmp_path, mim_model):
    """A run's checkpoints/last.pt carries the model's config.json under swinkit.config (no folder to read)."""
    state = {"swinkit.config": (mim_model / "config.json").read_text(), "progress": {}, "optimizer": {}}
    save_torch(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=MIM_REFUSAL):
        load_predictor(tmp_path / "last.pt")


def test_serve_refuses_a_mim_model(tmp_path, mim_model, capsys):
    assert main(["serve", "--model", str(mim_model), "--port", "1"]) == 2  # refused before any port opens
    assert capsys.readouterr().err == f"swinkit serve: error: could not load {mim_model}: {MIM_REFUSAL}\n"
    with health_after_loading(create_app(ServeSettings(model=str(mim_model)))) as health:
        assert health.status_code == 503 and MIM_REFUSAL in health.json()["error"]["message"]


@pytest.mark.parametrize(
    "module",
    [
        swinkit.batch,
        swinkit.cli.batch,
        swinkit.cli.evaluate,
        swinkit.cli.predict,
        swinkit.engine.evaluate,
        swinkit.serve.app,
        swinkit.serve.service,
        swinkit.serve.state,
    ],  # fmt: skip
)
def test_the_shared_path_asks_no_task_which_it_is(module):
    source = inspect.getsource(module)
    words = ("task ==", "isinstance(predictor", "isinstance(result", "ClassificationTask", "Predictor.from_pretrained",
             "multi_label")  # fmt: skip
    for word in words:
        assert word not in source, f"{module.__name__}: {word}"

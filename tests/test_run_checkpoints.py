"""A run's own checkpoints (best.safetensors, last.pt) load as exactly the model that was trained.

They once loaded as "official, window 8, image 256" for a swinv2_micro run at 32 px (window 4): logits off,
labels LABEL_0.., evaluate failing. Every command must now read the file's own description.
"""

import base64
import json
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from swinkit.checkpoint_io import load_torch, save_safetensors
from swinkit.cli import main
from swinkit.engine.evaluate import evaluate_model
from swinkit.inference import Predictor
from swinkit.loading import load_checkpoint, model_from_checkpoint
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.service import ClassificationService

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "gray": (128, 128, 128)}


def make_colors(root, per_class, seed):
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (40, 36, 3)) + np.array(color) // 2
            pixels[10:30, 9:27] = color
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A swinv2_micro run at 32 px with EMA: nothing about it matches what shape inference would guess."""
    root = tmp_path_factory.mktemp("run_checkpoints")
    train, val = make_colors(root / "train", 6, seed=0), make_colors(root / "val", 2, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code = main(
        ["train", "--data", str(train), "--val-data", str(val), "--output", str(root / "run"),
         "--preset", "swinv2_micro", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
         "--lr", "2e-3", "--no-progress", "--set", "augment.mixup=0", "--set", "augment.cutmix=0",
         "--set", "run.ema=true", "--set", "run.ema_decay=0.5"]
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert code == 0
    return root / "run", val


def logits(predictor: Predictor, images) -> torch.Tensor:
    return torch.stack([torch.tensor(p.probs) for p in predictor.predict(images)])


def val_images(val):
    return sorted(val.rglob("*.png"))


@pytest.mark.parametrize("name", ["best.safetensors", "last.pt"])
def test_checkpoint_loads_as_the_trained_model(run, name):
    folder, val = run
    ckpt = load_checkpoint(folder / "checkpoints" / name)
    trained = load_checkpoint(folder).config
    assert ckpt.config == trained  # window 4, image 32, v2, four named classes, problem type
    assert ckpt.config.trunk.window_size == 4 and ckpt.config.trunk.image_size == 32
    assert ckpt.config.label_names == ("blue", "gray", "green", "red")
    assert ckpt.preprocessing == json.loads((folder / "preprocessor_config.json").read_text())
    expected = Predictor.from_pretrained(folder)
    if name == "last.pt":  # the weights a run evaluates with are its EMA's; the folder holds the best epoch's
        state = load_torch(folder / "checkpoints" / name)
        model = model_from_checkpoint(load_checkpoint(folder))
        model.load_state_dict(state["ema"]["weights"])
        expected = Predictor(model, expected.processor)
    got = logits(Predictor.from_pretrained(folder / "checkpoints" / name), val_images(val))
    assert torch.equal(got, logits(expected, val_images(val)))


def test_convert_predict_evaluate_and_serve_from_run_checkpoints(run, tmp_path, capsys):
    folder, val = run
    best = folder / "checkpoints" / "best.safetensors"
    assert main(["convert", str(best), str(tmp_path / "converted")]) == 0
    assert "window 4, image 32, 4 classes" in capsys.readouterr().out
    written = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert written == json.loads((folder / "config.json").read_text())
    images = val_images(val)
    reference = logits(Predictor.from_pretrained(folder), images)
    assert torch.equal(logits(Predictor.from_pretrained(tmp_path / "converted"), images), reference)

    assert (
        main(["predict", "--model", str(best), "--output", str(tmp_path / "p.jsonl"), *map(str, images)]) == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert {label for row in rows for label in row["labels"]} == set(COLORS)

    for name in ("best.safetensors", "last.pt"):
        report = evaluate_model(folder / "checkpoints" / name, val)
        assert report["primary_metric"] if "primary_metric" in report else report["accuracy"] >= 0
        assert len(report["per_class"]) == len(COLORS)
    assert evaluate_model(best, val)["loss"] == pytest.approx(evaluate_model(folder, val)["loss"], rel=1e-6)

    service = ClassificationService.load(str(best))
    rows = [base64.b64encode(path.read_bytes()).decode() for path in images[:3]]
    with TestClient(create_app(ServeSettings(model=str(best)), service=service)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.post("/score", json={"input_data": rows})
    assert response.status_code == 200, response.text
    results = response.json()
    assert [r["labels"] for r in results] == [["blue", "gray", "green", "red"]] * 3
    torch.testing.assert_close(torch.tensor([r["probs"] for r in results]), reference[:3], atol=1e-5, rtol=0)


def test_a_run_checkpoint_without_a_description_reads_the_run_folder(run, tmp_path):
    """best.safetensors files written before checkpoints described themselves: the run folder tells."""
    folder, _ = run
    legacy = tmp_path / "old_run"
    (legacy / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        (legacy / name).write_text((folder / name).read_text())
    tensors = load_checkpoint(folder / "checkpoints" / "best.safetensors").state_dict
    save_safetensors(tensors, legacy / "checkpoints" / "best.safetensors")  # no description metadata
    assert (
        load_checkpoint(legacy / "checkpoints" / "best.safetensors").config == load_checkpoint(folder).config
    )

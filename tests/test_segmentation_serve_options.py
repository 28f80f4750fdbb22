"""``swinkit serve`` takes the semantic segmentation inference options ``swinkit predict`` has: ``--mode
whole|slide`` and ``--tta`` (also ``SWINKIT_MODE``/``SWINKIT_TTA`` and settings-file keys), passed to the
same predictor options as predict's."""

from __future__ import annotations

import argparse

import httpx
import pytest
from PIL import Image
from serve_helpers import live_server, make_model_dir
from test_segmentation_serve import check_rows, files  # noqa: F401  (the served UperNet folder fixture)

from swinkit.cli import serve as serve_cli
from swinkit.inference import load_predictor
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.server import load_model


def _settings(argv):
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return serve_cli.settings_from_args(parser.parse_args(argv))


def test_flags_environment_and_file_set_mode_and_tta(monkeypatch, tmp_path):
    assert _settings(["--model", "m"]).task_options() == {}
    assert _settings(["--model", "m", "--mode", "slide", "--tta"]).task_options() == {
        "mode": "slide",
        "tta": True,
    }
    monkeypatch.setenv("SWINKIT_MODE", "slide")
    monkeypatch.setenv("SWINKIT_TTA", "true")
    assert ServeSettings(model="m").task_options() == {"mode": "slide", "tta": True}
    assert _settings(["--model", "m", "--mode", "whole"]).task_options() == {"mode": "whole", "tta": True}
    monkeypatch.delenv("SWINKIT_MODE")
    monkeypatch.delenv("SWINKIT_TTA")
    (tmp_path / "serve.yaml").write_text("mode: slide\n")
    assert _settings(["--model", "m", "--config", str(tmp_path / "serve.yaml")]).task_options() == {
        "mode": "slide"
    }
    with pytest.raises(
        ValueError, match=r"invalid serve settings \(mode: Input should be 'whole' or 'slide'"
    ):
        _settings(["--model", "m", "--mode", "sliding"])


def test_a_classifier_refuses_tta_in_one_sentence(tmp_path):
    folder = make_model_dir(tmp_path)
    with pytest.raises(
        ValueError, match="could not load .*: --tta is not a prediction option of a classification"
    ):
        load_model(ServeSettings(model=str(folder), tta=True))


def test_served_slide_tta_answers_equal_predicts_on_loopback(files):  # noqa: F811
    folder, images = files
    app = create_app(ServeSettings(model=str(folder), mode="slide", tta=True, warmup=False))
    with live_server(app) as url:
        inference = httpx.get(f"{url}/info").json()["inference"]
        assert inference["mode"] == "slide" and inference["tta"] is True
        answer = httpx.post(
            f"{url}/score", content=images[2].read_bytes(), headers={"content-type": "image/png"}
        )
        assert answer.status_code == 200, answer.text
    check_rows(answer.json(), images[2:])
    predictor = load_predictor(folder, mode="slide", tta=True)
    (expected,) = predictor.infer([predictor.prepare(Image.open(images[2]).convert("RGB"))])
    plain = load_predictor(folder)
    (whole,) = plain.infer([plain.prepare(Image.open(images[2]).convert("RGB"))])
    assert answer.json() == [expected.to_azure()]
    assert answer.json() != [whole.to_azure()]  # the options changed the answer: they reached the model

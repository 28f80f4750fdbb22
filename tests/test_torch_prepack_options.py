"""``prepack`` / ``--torch-prepack``: every task's torch fp32 path can run oneDNN-prepacked linear layers, from
the Python API, ``swinkit predict``, ``swinkit batch`` and ``swinkit serve``; outputs stay within 1e-5."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from instance_scenes import FAST
from serve_helpers import make_images, make_model_dir

from swinkit.cli import main
from swinkit.cli import serve as serve_cli
from swinkit.inference import load_predictor
from swinkit.models.detection.checkpoints import save_pretrained as save_detector
from swinkit.models.detection.mask_rcnn import create_mask_rcnn
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.checkpoints import save_hf
from swinkit.runtime.torch_speed import PrepackedLinear
from swinkit.serve import ServeSettings
from swinkit.serve.server import load_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


def _packed(predictor) -> bool:
    return any(isinstance(m, PrepackedLinear) for m in predictor.backend.model.modules())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepack")
    torch.manual_seed(0)
    save_hf(create_upernet("upernet_swin_micro", labels=["sky", "road"]), root / "upernet")
    detector = save_detector(
        create_mask_rcnn("mask_rcnn_swin_micro", labels=("a", "b"), **FAST), root / "det"
    )
    return {
        "classification": make_model_dir(root),
        "segmentation": root / "upernet",
        "det": detector,
    }


@pytest.mark.parametrize("task", ["classification", "segmentation", "det"])
def test_every_task_runs_its_network_prepacked_with_the_same_outputs(folders, task):
    plain, packed = load_predictor(folders[task]), load_predictor(folders[task], prepack=True)
    assert _packed(packed) and not any(isinstance(m, PrepackedLinear) for m in plain.model.modules())
    assert (packed.info()["runtime"], packed.info()["precision"]) == ("torch", "fp32")
    assert (packed.info()["torch_prepack"], plain.info()["torch_prepack"]) == (True, False)  # GET /info
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 64, 96)
    expected, got = plain.backend(pixels), packed.backend(pixels)
    for a, b in zip(
        expected if isinstance(expected, tuple) else (expected,),
        got if isinstance(got, tuple) else (got,),
        strict=True,
    ):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_prepack_with_another_runtime_or_precision_is_refused(folders):
    with pytest.raises(ValueError, match=r"\(--torch-prepack\) are a torch option, not one of openvino"):
        load_predictor(folders["classification"], runtime="openvino", prepack=True)
    with pytest.raises(ValueError, match="prepacked linear layers run fp32 weights; precision bf16"):
        load_predictor(folders["classification"], precision="bf16", prepack=True)


def test_predict_and_batch_take_the_flag_with_the_same_answers(folders, tmp_path):
    images = [str(p) for p in make_images(tmp_path)]
    rows = {}
    for name, extra in (("plain", []), ("packed", ["--torch-prepack"])):
        out = tmp_path / f"{name}.jsonl"
        assert (
            main(
                ["predict", "--model", str(folders["classification"]), *images, "--output", str(out), *extra]
            )
            == 0
        )
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
        batch_out = tmp_path / f"{name}-batch.jsonl"
        command = ["batch", "--model", str(folders["classification"]), "--input", str(tmp_path), "--output"]
        assert main([*command, str(batch_out), "--no-progress", *extra]) == 0
        assert len(batch_out.read_text().splitlines()) == len(images)
    for a, b in zip(rows["plain"], rows["packed"], strict=True):
        assert a["labels"] == b["labels"]
        assert max(abs(x - y) for x, y in zip(a["probs"], b["probs"], strict=True)) < 1e-5


def test_serve_takes_the_flag_and_the_environment(folders, monkeypatch):
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    args = parser.parse_args(["--model", str(folders["classification"]), "--torch-prepack"])
    settings = serve_cli.settings_from_args(args)
    assert settings.torch_prepack is True
    assert _packed(load_model(settings).predictor)
    monkeypatch.setenv("SWINKIT_TORCH_PREPACK", "1")
    assert ServeSettings(model="m").torch_prepack is True


def test_get_info_says_whether_the_served_network_runs_prepacked(folders):
    from serve_helpers import ready_client

    from swinkit.serve import create_app

    for prepack in (True, False):
        app = create_app(
            ServeSettings(model=str(folders["classification"]), torch_prepack=prepack, warmup=False)
        )
        with ready_client(app) as client:
            info = client.get("/info").json()  # through the response model, not only the predictor's info()
        assert (info["runtime"], info["torch_prepack"]) == ("torch", prepack)

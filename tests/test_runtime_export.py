"""``swinkit export``: export folders that predict, batch and serve load and run on their runtime, int8 with
its fp32 agreement check (and refusal past the bound), stale exports refused, atomic writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from runtime_helpers import LABELS, trained_classifier, write_images
from serve_helpers import b64, ready_client

import swinkit
from swinkit.cli import main
from swinkit.inference import Predictor
from swinkit.runtime.export import OPSET
from swinkit.runtime.exporter import ExportRequest, export_model
from swinkit.serve import ServeSettings, create_app

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model_dir():
    return trained_classifier()


@pytest.fixture(scope="module")
def reference(model_dir):
    return Predictor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(calibration folder, held-out folder, held-out image paths)."""
    root = tmp_path_factory.mktemp("images")
    write_images(root / "calibration", 36, seed=3)
    held_out = write_images(root / "held_out", 30, seed=7)
    return root / "calibration", root / "held_out", [path for path, _ in held_out]


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory):
    destination = tmp_path_factory.mktemp("onnx") / "export"
    export_model(model_dir, destination, ExportRequest("onnx"))
    return destination


def _probs(predictor, paths) -> torch.Tensor:
    return torch.tensor([p.probs for p in predictor.predict(paths)])  # (N, C)


def test_onnx_folder_holds_the_model_and_loads_on_its_runtime(onnx_dir, model_dir, reference, data):
    assert sorted(p.name for p in onnx_dir.iterdir()) == [
        "config.json", "export.json", "model.onnx", "model.safetensors", "preprocessor_config.json"
    ]  # fmt: skip
    info = json.loads((onnx_dir / "export.json").read_text())
    assert (info["format"], info["precision"], info["opset"], info["source"]) == (
        "onnx",
        "fp32",
        OPSET,
        str(model_dir),
    )
    assert info["fingerprint"] == reference.fingerprint()[1]
    assert (info["output_names"], info["dynamic_hw"], info["input_shape"]) == (
        ["logits"],
        False,
        [1, 3, 32, 32],
    )
    assert not list(onnx_dir.parent.glob(".*"))  # no staging folder left behind
    predictor = Predictor.from_pretrained(onnx_dir)
    assert (predictor.info()["runtime"], predictor.labels) == ("onnxruntime", LABELS)
    torch.testing.assert_close(_probs(predictor, data[2]), _probs(reference, data[2]), atol=1e-5, rtol=0)
    on_torch = Predictor.from_pretrained(onnx_dir, runtime="torch")  # the weights saved beside the graph
    assert on_torch.info()["runtime"] == "torch"


def test_stale_export_is_refused(onnx_dir, tmp_path):
    stale = shutil.copytree(onnx_dir, tmp_path / "stale")
    model = swinkit.from_pretrained(stale)
    with torch.no_grad():
        model.head.bias.add_(0.5)  # the weights change after the export ...
    swinkit.save_pretrained(model, stale)  # ... and are saved over the folder's
    with pytest.raises(
        ValueError, match="is a stale export: its weights changed after model.onnx was written"
    ):
        Predictor.from_pretrained(stale)


def test_destinations_that_would_lose_data_and_bad_requests_are_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="holds files that are not a swinkit export"):
        export_model(model_dir, model_dir, ExportRequest("onnx"))
    with pytest.raises(ValueError, match="--precision int8 needs --calibration-data DIR"):
        export_model(model_dir, tmp_path / "x", ExportRequest("openvino", "int8"))
    with pytest.raises(ValueError, match="runtime onnxruntime has no bf16 inference"):
        export_model(model_dir, tmp_path / "x", ExportRequest("onnx", "bf16"))
    assert not (tmp_path / "x").exists()


def test_a_model_whose_inputs_vary_in_size_exports_a_graph_of_dynamic_height_and_width(tmp_path):
    model = swinkit.create_model("swinv2_micro", labels=["a", "b"])
    source = swinkit.save_pretrained(model, tmp_path / "m")
    keeps_aspect = {"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 64}, "resample": 3}
    (source / "preprocessor_config.json").write_text(json.dumps(keeps_aspect))
    info = export_model(source, tmp_path / "x", ExportRequest("onnx"))
    assert info.dynamic_hw and json.loads((tmp_path / "x" / "export.json").read_text())["dynamic_hw"]
    exported, reference = Predictor.from_pretrained(tmp_path / "x"), Predictor.from_pretrained(source)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((80, 150), (130, 70))
    ]
    assert {tuple(exported.prepare(image).shape) for image in images} == {(3, 64, 120), (3, 118, 64)}
    got, expected = _probs(exported, images), _probs(reference, images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow  # about 20 s (ONNX Runtime) and 60 s (NNCF) on two busy cores
@pytest.mark.parametrize(("format", "runtime"), [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_int8_export_agrees_with_fp32_on_held_out_images(
    model_dir, reference, data, tmp_path, format, runtime
):
    calibration, held_out, paths = data
    request = ExportRequest(format, "int8", calibration_data=calibration, validation_data=held_out)
    info = export_model(model_dir, tmp_path / "int8", request)
    assert info.agreement["passed"] and info.agreement["images"] == 30
    predictor = Predictor.from_pretrained(tmp_path / "int8")
    assert (predictor.info()["runtime"], predictor.info()["precision"]) == (runtime, "int8")
    expected, got = _probs(reference, paths), _probs(predictor, paths)
    assert float((expected.argmax(-1) == got.argmax(-1)).float().mean()) >= 0.99
    assert float((expected - got).abs().max()) == pytest.approx(info.agreement["max_prob_diff"], abs=1e-6)
    with pytest.raises(ValueError, match="holds an int8 graph, which runs only at int8"):
        Predictor.from_pretrained(tmp_path / "int8", precision="fp32")


def test_int8_past_the_bound_is_refused_unless_forced(model_dir, data, tmp_path):
    calibration = data[0]
    request = ExportRequest(
        "onnx", "int8", calibration_data=calibration, bounds={"max_prob_diff": 0.0}, max_images=8
    )
    with pytest.raises(
        ValueError, match=r"int8 onnx export refused, too far from fp32: .*max_prob_diff 0\.\d+ > 0"
    ):
        export_model(model_dir, tmp_path / "refused", request)
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".*"))
    request.force = True
    info = export_model(model_dir, tmp_path / "forced", request)
    assert info.agreement["passed"] is False and (tmp_path / "forced" / "model.onnx").is_file()


def test_cli_export_then_predict_batch_and_serve_the_folder(model_dir, reference, data, tmp_path, capsys):
    paths = data[2][:6]
    destination = tmp_path / "ov"
    assert (
        main(["export", str(model_dir), str(destination), "--format", "openvino", "--precision", "bf16"]) == 0
    )
    assert sorted(p.name for p in destination.glob("model.*")) == [
        "model.bin",
        "model.safetensors",
        "model.xml",
    ]
    expected = _probs(reference, paths)
    assert (
        main(
            ["predict", "--model", str(destination), *map(str, paths), "--output", str(tmp_path / "p.jsonl")]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["probs"] for r in rows], expected, atol=0.05)
    (tmp_path / "in").mkdir()
    for path in paths:
        shutil.copy(path, tmp_path / "in" / path.name)
    command = [
        "batch",
        "--model",
        str(destination),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "b.jsonl"),
    ]
    assert (
        main([*command, "--workers", "0", "--no-progress", "--runtime", "openvino", "--precision", "fp32"])
        == 0
    )
    rows = {
        json.loads(line)["image"]: json.loads(line)["probs"]
        for line in (tmp_path / "b.jsonl").read_text().splitlines()
    }
    np.testing.assert_allclose([rows[str(tmp_path / "in" / p.name)] for p in paths], expected, atol=1e-5)
    settings = ServeSettings(model=str(destination))
    with ready_client(create_app(settings)) as client:
        body = {"input_data": [b64(p.read_bytes()) for p in paths]}
        served = client.post("/score", json=body).json()
        np.testing.assert_allclose([r["probs"] for r in served], expected, atol=0.05)
        info = client.get("/info").json()
        assert (info["runtime"], info["precision"]) == ("openvino", "bf16")
        assert 'swinkit_model_info{precision="bf16",runtime="openvino"} 1' in client.get("/metrics").text


def test_serve_settings_take_runtime_and_precision_from_the_environment(monkeypatch):
    monkeypatch.setenv("SWINKIT_RUNTIME", "onnxruntime")
    monkeypatch.setenv("SWINKIT_PRECISION", "int8")
    settings = ServeSettings(model="m")
    assert (settings.runtime, settings.precision, settings.openvino_hint) == (
        "onnxruntime",
        "int8",
        "LATENCY",
    )
    monkeypatch.setenv("SWINKIT_PRECISION", "fp16")
    with pytest.raises(ValueError, match="precision"):
        ServeSettings(model="m")


def test_re_exporting_an_export_folder_copies_the_model_files_but_none_of_its_graphs(tmp_path):
    from swinkit.runtime.exporter import _write_model_files

    source, staging = tmp_path / "ov_export", tmp_path / "staging"
    source.mkdir(), staging.mkdir()
    names = ("config.json", "model.safetensors", "export.json", "model.xml", "model.bin", "model.onnx")
    for name in names:
        (source / name).write_text(name)
    _write_model_files(object(), source, staging)  # not a classifier: the folder's files are copied
    assert sorted(p.name for p in staging.iterdir()) == ["config.json", "model.safetensors"]

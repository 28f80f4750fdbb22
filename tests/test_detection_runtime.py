"""The detection predictor on every runtime (issue 14): the dense half (backbone, FPN, RPN head convs) runs on
ONNX Runtime or OpenVINO, proposals, RoIAlign, the RoI heads and mask pasting stay in torch, shared; swinkit
export writes detection folders that predict and serve load; int8 is checked by COCO AP against fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from instance_scenes import FAST
from PIL import Image
from serve_helpers import b64, ready_client

from swinkit.cli import main
from swinkit.inference import load_predictor
from swinkit.models.detection.checkpoints import save_pretrained
from swinkit.models.detection.fpn import extra_level
from swinkit.models.detection.mask_rcnn import create_mask_rcnn, dense_output_names, split_dense
from swinkit.runtime.export import read_export
from swinkit.runtime.exporter import ExportRequest, export_model
from swinkit.runtime.quantize import check_agreement
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.schemas import SegmentationResult

LABELS = ("can", "carton", "milk_bottle")
WIDE, TALL = (80, 60), (60, 90)  # (width, height): padded to 64x96 and 96x64 by the test pipeline


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """A saved micro Mask R-CNN (random weights, small test scale)."""
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", labels=LABELS, **FAST).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("detector") / "mask")


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Noise with a red rectangle on it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 30, 30)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Six scenes, wide, tall and square."""
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for i, size in enumerate((WIDE, TALL, (64, 64), (100, 50), (50, 100), WIDE)):
        paths.append(folder / f"scene{i}.png")
        scene(*size, seed=i).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def onnx_dir(detector, tmp_path_factory) -> Path:
    """``swinkit export DETECTOR DST --format onnx``: the fp32 dense graph, which OpenVINO also reads."""
    destination = tmp_path_factory.mktemp("exports") / "onnx"
    assert main(["export", str(detector), str(destination), "--format", "onnx"]) == 0
    return destination


def assert_same_detections(expected: list, got: list) -> None:
    for a, b in zip(expected, got, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.masks, b.masks)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_the_torch_predictor_runs_the_dense_half_then_the_heads(detector):
    """The split path gives exactly the detector's own forward."""
    predictor = load_predictor(detector)
    prepared = [predictor.prepare(scene(*WIDE, 0)), predictor.prepare(scene(*TALL, 1))]
    pixels = predictor.preprocessor.pad([p.pixels for p in prepared])
    metas = [p.meta for p in prepared]
    with torch.inference_mode():
        expected = predictor.model(pixels, metas).detections
        dense = split_dense(predictor.model.dense(pixels))
    assert [tuple(f.shape[2:]) for f in dense.features] == [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2)]
    for a, b in zip(expected, predictor.detect(prepared), strict=True):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    assert predictor.info()["runtime"] == "torch" and predictor.info()["precision"] == "fp32"


@pytest.mark.parametrize("size", [(7, 10), (8, 8), (1, 3)])
def test_the_extra_fpn_level_is_mmdets_max_pool(size):
    """P6 is ``F.max_pool2d(P5, 1, stride=2)`` value for value, as a strided slice (which OpenVINO int8 keeps)."""
    x = torch.randn(2, 4, *size)
    assert torch.equal(extra_level(x), torch.nn.functional.max_pool2d(x, 1, stride=2))


def test_an_export_folder_holds_the_dense_graph_and_runs_it_by_default(onnx_dir):
    info = read_export(onnx_dir)
    assert info.output_names == list(dense_output_names(5)) and info.dynamic_hw
    assert (onnx_dir / "model.safetensors").is_file() and (onnx_dir / "preprocessor_config.json").is_file()
    predictor = load_predictor(onnx_dir)
    assert (predictor.info()["runtime"], predictor.info()["precision"]) == ("onnxruntime", "fp32")
    assert load_predictor(onnx_dir, runtime="torch").info()["runtime"] == "torch"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_runtimes_give_the_torch_detections_at_any_aspect_ratio(detector, onnx_dir, runtime):
    """Dense outputs within 1e-4 of torch, then the same boxes (1e-3), labels and masks, for a wide and a
    tall image (two input sizes of one graph), one at a time and batched together."""
    reference = load_predictor(detector)
    candidate = load_predictor(onnx_dir, runtime=runtime)
    assert candidate.info()["runtime"] == runtime
    images = [scene(*WIDE, 2), scene(*TALL, 3)]
    for image in images:
        pixels = reference.preprocessor.pad([reference.prepare(image).pixels])
        for a, b in zip(reference.backend(pixels), candidate.backend(pixels), strict=True):
            assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4
        assert_same_detections(reference.predict([image]), candidate.predict([image]))
    assert_same_detections(reference.predict(images), candidate.predict(images))


def test_agreement_is_full_for_fp32_and_measured_for_bf16(detector, onnx_dir, images):
    """COCO AP against the fp32 detections: 1.0 for the fp32 graph; OpenVINO bf16 within the default bounds."""
    reference = load_predictor(detector)
    prepared = [reference.prepare(Image.open(p).convert("RGB")) for p in images]
    fp32 = check_agreement("instance_segmentation", reference, load_predictor(onnx_dir), prepared)
    assert fp32.passed and fp32.figures["bbox_AP"] > 0.99 and fp32.figures["segm_AP"] > 0.99
    assert fp32.figures["objects"] == sum(len(p) for p in reference.infer(prepared))
    bf16 = load_predictor(onnx_dir, runtime="openvino", precision="bf16")
    agreement = check_agreement("instance_segmentation", reference, bf16, prepared)
    assert 0 < agreement.figures["bbox_AP"] <= 1 and "segm_AP" in agreement.figures


@pytest.mark.slow  # two ONNX Runtime int8 exports: about 80 s on two busy cores
def test_int8_export_records_its_ap_and_is_refused_past_the_bounds(detector, images, tmp_path):
    """ONNX Runtime int8 (static QDQ) calibrated on the scenes: refused when its box AP against fp32 is below
    the bound asked for (nothing written), written with --force, then it runs at int8 only."""
    folder = images[0].parent
    request = ExportRequest("onnx", "int8", calibration_data=folder, bounds={"bbox_AP": 0.9999})
    with pytest.raises(
        ValueError, match=r"int8 onnx export refused, too far from fp32: bbox_AP 0\.\d+ < 0\.9999"
    ):
        export_model(detector, tmp_path / "refused", request)
    assert not (tmp_path / "refused").exists()
    request.force = True
    info = export_model(detector, tmp_path / "int8", request)
    assert info.agreement["passed"] is False and info.agreement["images"] == len(images)
    assert set(info.agreement["bounds"]) == {"bbox_AP", "bbox_AP_50", "segm_AP"}
    predictor = load_predictor(tmp_path / "int8")
    assert (predictor.info()["runtime"], predictor.info()["precision"]) == ("onnxruntime", "int8")
    assert len(predictor.predict([Image.open(images[1]).convert("RGB")])) == 1
    with pytest.raises(ValueError, match="holds an int8 graph, which runs only at int8"):
        load_predictor(tmp_path / "int8", precision="fp32")


def test_predict_cli_on_openvino_writes_the_torch_rows(detector, images, tmp_path):
    """``swinkit predict --runtime openvino`` on a model folder (traced on the fly) gives torch's Azure rows."""
    rows = {}
    for runtime in ("torch", "openvino"):
        out = tmp_path / f"{runtime}.jsonl"
        args = ["predict", "--model", str(detector), *map(str, images[:2]), "--output", str(out)]
        assert main([*args, "--runtime", runtime, "--max-detections", "5"]) == 0
        rows[runtime] = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(rows["torch"], rows["openvino"], strict=True):
        assert [o["label"] for o in a["boxes"]] == [o["label"] for o in b["boxes"]] and len(a["boxes"]) == 5
        for x, y in zip(a["boxes"], b["boxes"], strict=True):
            assert list(x["box"].values()) == pytest.approx(list(y["box"].values()), abs=1e-4)


def test_serve_on_openvino_answers_in_the_azure_schema(detector, onnx_dir, images):
    settings = ServeSettings(model=str(onnx_dir), runtime="openvino", max_detections=5, max_delay_ms=20)
    with ready_client(create_app(settings)) as client:
        body = {"input_data": [b64(images[0].read_bytes()), b64(images[1].read_bytes())]}
        answer = client.post("/score", json=body)
        assert answer.status_code == 200, answer.text
        pair = [Image.open(p).convert("RGB") for p in images[:2]]
        expected = [p.to_azure() for p in load_predictor(detector, top_k=5).predict(pair)]
        for served, direct in zip(answer.json(), expected, strict=True):
            SegmentationResult.model_validate(served)
            assert [o["label"] for o in served["boxes"]] == [o["label"] for o in direct["boxes"]]
            for x, y in zip(served["boxes"], direct["boxes"], strict=True):
                assert list(x["box"].values()) == pytest.approx(list(y["box"].values()), abs=1e-4)
        info = client.get("/info").json()
        assert (info["runtime"], info["precision"], info["swinkit_task"]) == (
            "openvino", "fp32", "instance_segmentation"
        )  # fmt: skip
        assert client.post("/score", json={"input_data": ["bm90IGFuIGltYWdl"]}).status_code == 400
        assert client.post("/score", json={"input_data": {"columns": ["x"]}}).status_code in (400, 422)


@pytest.mark.slow  # NNCF calibration: about 110 s on two busy cores
def test_openvino_int8_keeps_the_rpn_outputs(detector, images, tmp_path):
    """NNCF int8 with the RPN head left in float and P6 as a slice: box AP against fp32 about 0.8 on these
    random-weight detections (0.09 with both quantized as they were), every dense output of the right size."""
    request = ExportRequest("openvino", "int8", calibration_data=images[0].parent, force=True)
    info = export_model(detector, tmp_path / "ov_int8", request)
    assert info.agreement["bbox_AP"] > 0.6, info.agreement
    reference, candidate = load_predictor(detector), load_predictor(tmp_path / "ov_int8")
    pixels = reference.preprocessor.pad([reference.prepare(scene(*TALL, 4)).pixels])
    expected, got = split_dense(reference.backend(pixels)), split_dense(candidate.backend(pixels))
    for a, b in zip(expected.features + expected.scores, got.features + got.scores, strict=True):
        assert a.shape == b.shape and float((a - b).abs().max()) < 0.5 * float(a.abs().max()) + 1e-3

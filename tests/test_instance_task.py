"""The instance-segmentation and object-detection tasks end to end on a micro detector: the saved model's task,
predict (--score-threshold, --max-detections, --visualize), batch, evaluate on COCO and Azure JSONL, and serve
in the Azure ML schema on loopback."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from instance_scenes import FAST
from PIL import Image
from serve_helpers import ready_client

from swinkit.cli import main
from swinkit.data.instance_formats import convert_instances
from swinkit.inference import load_predictor, task_of_source
from swinkit.models.detection.checkpoints import save_pretrained
from swinkit.models.detection.mask_rcnn import create_mask_rcnn
from swinkit.models.detection.preprocess import DetectionPreprocessor
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.schemas import DetectionResult, SegmentationResult
from swinkit.tasks import InstanceSegmentationTask, ObjectDetectionTask
from swinkit.tasks.instance_results import InstancePrediction

LABELS = ("can", "carton", "milk_bottle")
SIZES = ((72, 52), (60, 80), (64, 64))  # (width, height) of the test images


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Saved micro Mask R-CNN and Faster R-CNN (random weights, small test scale), with three labels."""
    root = tmp_path_factory.mktemp("detectors")
    out = {}
    for name, preset in (("mask", "mask_rcnn_swin_micro"), ("box", "faster_rcnn_swin_micro")):
        model = create_mask_rcnn(preset, labels=LABELS, **FAST).eval()
        out[name] = save_pretrained(model, root / name)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[h // 4 : h // 2, w // 4 : w // 2] = (250, 30, 30)
        paths.append(root / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_a_saved_detector_is_found_to_be_of_its_task(models):
    assert task_of_source(models["mask"]) is InstanceSegmentationTask
    assert task_of_source(models["box"]) is ObjectDetectionTask
    predictor = load_predictor(models["mask"])
    assert predictor.labels == list(LABELS) and predictor.azure_task == "image-instance-segmentation"
    assert predictor.response_model is SegmentationResult
    assert load_predictor(models["box"]).response_model is DetectionResult


def test_predictions_are_the_models_detections_in_original_pixels(models, images):
    predictor = load_predictor(models["mask"])
    image = Image.open(images[0]).convert("RGB")
    (result,) = predictor.predict([image])
    batch = DetectionPreprocessor(scale=(96, 64))([image])
    with torch.inference_mode():
        (expected,) = predictor.model(batch.pixel_values, batch.image_metas).detections
    assert isinstance(result, InstancePrediction) and len(result) == len(expected) > 0
    np.testing.assert_allclose(result.boxes, expected.boxes.numpy(), atol=1e-5)
    assert result.masks.shape == (len(result), 52, 72)  # the original image's size
    assert np.array_equal(result.masks, expected.masks.numpy())
    SegmentationResult.model_validate(result.to_azure())


def test_threshold_and_top_k_limit_the_objects(models, images):
    image = Image.open(images[1]).convert("RGB")
    everything = load_predictor(models["mask"]).predict([image])[0]
    limited = load_predictor(models["mask"], top_k=3, threshold=float(np.median(everything.scores))).predict(
        [image]
    )[0]
    assert 0 < len(limited) <= 3 and (limited.scores >= np.median(everything.scores)).all()
    assert list(limited.scores) == sorted(everything.scores, reverse=True)[: len(limited)]


@pytest.mark.slow
def test_predict_cli_writes_azure_rows_and_pictures(models, images, tmp_path):
    out, pictures = tmp_path / "rows.jsonl", tmp_path / "pictures"
    args = ["predict", "--model", str(models["mask"]), *map(str, images), "--output", str(out)]
    assert (
        main([*args, "--score-threshold", "0.2", "--max-detections", "4", "--visualize", str(pictures)]) == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in images]
    for row in rows:
        assert len(row["boxes"]) <= 4 and all(item["score"] >= 0.2 for item in row["boxes"])
        assert all(item["label"] in LABELS and "polygon" in item for item in row["boxes"])
    assert sorted(p.name for p in pictures.iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_batch_streams_detection_rows_in_order(models, images, tmp_path):
    """Decoded in two worker processes: the prepared images (pixels and ImageMeta) cross the process boundary."""
    out = tmp_path / "batch.jsonl"
    folder = images[0].parent
    assert main(["batch", "--model", str(models["box"]), "--input", str(folder), "--output", str(out),
                 "--workers", "2", "--no-progress", "--max-detections", "2"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(row["image"]).name for row in rows] == ["img0.png", "img1.png", "img2.png"]
    for row in rows:
        DetectionResult.model_validate({"boxes": row["boxes"]})
        assert len(row["boxes"]) <= 2 and all("polygon" not in item for item in row["boxes"])


def annotations(images: list[Path], root: Path) -> Path:
    """A COCO file of the test images: one carton per image, where the red square is."""
    data = {"images": [], "annotations": [], "categories": [{"id": 5, "name": "carton"}]}
    for i, ((w, h), path) in enumerate(zip(SIZES, images, strict=True), 1):
        data["images"].append({"id": i, "file_name": str(path), "width": w, "height": h})
        x1, y1, x2, y2 = w // 4, h // 4, w // 2, h // 2
        data["annotations"].append({"id": i, "image_id": i, "category_id": 5, "iscrowd": 0,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})  # fmt: skip
    path = root / "val.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_evaluate_on_coco_and_azure_jsonl_agree(models, images, tmp_path, capsys):
    coco = annotations(images, tmp_path)
    convert_instances(coco, tmp_path / "val.jsonl")
    from_coco = InstanceSegmentationTask.evaluate_saved(models["mask"], coco)
    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(models["mask"]), "--data", str(tmp_path / "val.jsonl"),
                 "--output", str(report)]) == 0  # fmt: skip
    assert "3 images: bbox_mAP" in capsys.readouterr().out
    from_jsonl = json.loads((report / "metrics.json").read_text())
    keys = [k for k in from_coco if k.startswith(("bbox_", "segm_"))]
    assert len(keys) == 24 and from_coco["primary_metric"] == "segm_mAP"
    assert {k: from_coco[k] for k in keys} == {k: from_jsonl[k] for k in keys}
    assert from_jsonl["per_class"]["bbox"]["can"] is None  # no ground truth: NaN, written as null
    assert from_jsonl["per_class"]["bbox"]["carton"] == from_coco["per_class"]["bbox"]["carton"]
    assert sorted(p.name for p in (report / "plots").iterdir()) == [
        "pr_curves_bbox.png",
        "pr_curves_segm.png",
    ]


def test_a_detector_on_boxes_only_data_has_box_metrics_only(models, images, tmp_path, capsys):
    coco = annotations(images, tmp_path)
    data = json.loads(coco.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    coco.write_text(json.dumps(data))
    convert_instances(coco, tmp_path / "boxes.jsonl")
    assert "polygon" not in (tmp_path / "boxes.jsonl").read_text()
    report = ObjectDetectionTask.evaluate_saved(models["box"], tmp_path / "boxes.jsonl")
    assert report["primary_metric"] == "bbox_mAP" and report["task"] == "object_detection"
    assert not [k for k in report if k.startswith("segm_")] and "bbox_mAP_75" in report
    assert main(["predict", "--model", str(models["box"]), str(images[0]), "--max-detections", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(images[0]) and 1 <= len(table) - 1 <= 2 and " box " in table[1]


def test_evaluate_refuses_labels_the_model_does_not_have(models, images, tmp_path):
    coco = annotations(images, tmp_path)
    data = json.loads(coco.read_text())
    data["categories"][0]["name"] = "bottle"
    coco.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id 1 .*label 'bottle' is not one of the model's labels"):
        InstanceSegmentationTask.evaluate_saved(models["mask"], coco)


def test_training_refuses_boxes_only_data_and_a_preset_of_the_other_task(images, tmp_path, capsys):
    coco = {"images": [{"id": 1, "file_name": str(images[2]), "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 20, 20], "iscrowd": 0,
                             "area": 400}],
            "categories": [{"id": 1, "name": "can"}]}  # fmt: skip
    data = tmp_path / "boxes.json"
    data.write_text(json.dumps(coco))
    args = ["train", "--task", "instance_segmentation", "--data", str(data), "--output", str(tmp_path / "r")]
    assert main([*args, "--preset", "mask_rcnn_swin_micro"]) == 2
    assert "has objects without masks; train the object_detection task" in capsys.readouterr().err
    assert main([*args, "--preset", "faster_rcnn_swin_micro"]) == 2
    assert "preset faster_rcnn_swin_micro is a model of the object_detection task" in capsys.readouterr().err


def png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_serve_answers_in_the_model_cards_schema(models, images):
    settings = ServeSettings(model=str(models["mask"]), max_detections=5, max_delay_ms=50)
    with ready_client(create_app(settings)) as client:
        answer = client.post("/score", json={"input_data": {"columns": ["image"], "index": [0, 1],
                                                            "data": [png(images[0]), png(images[2])]}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        results = answer.json()
        assert len(results) == 2 and all(0 < len(r["boxes"]) <= 5 for r in results)
        for result in results:
            SegmentationResult.model_validate(result)
            for item in result["boxes"]:
                assert item["label"] in LABELS and list(item) == ["box", "label", "score", "polygon"]
        pair = [Image.open(images[i]).convert("RGB") for i in (0, 2)]
        expected = [p.to_azure() for p in load_predictor(models["mask"], top_k=5).predict(pair)]
        for served, direct in zip(results, expected, strict=True):  # one object per image, in input order
            assert [item["label"] for item in served["boxes"]] == [item["label"] for item in direct["boxes"]]
            for a, b in zip(served["boxes"], direct["boxes"], strict=True):
                assert list(a["box"].values()) == pytest.approx(list(b["box"].values()), abs=1e-5)
        info = client.get("/info").json()
        assert info["task"] == "image-instance-segmentation" and info["labels"] == list(LABELS)
        assert info["max_detections"] == 5 and info["swinkit_task"] == "instance_segmentation"
        schema = client.get("/openapi.json").json()["paths"]["/score"]["post"]["responses"]["200"]
        assert schema["content"]["application/json"]["schema"]["items"]["$ref"].endswith("SegmentationResult")
        bad = client.post("/score", json={"input_data": ["bm90IGFuIGltYWdl"]})
        assert bad.status_code == 400 and bad.json()["error"]["index"] == 0
        buffer = io.BytesIO()
        Image.new("RGB", (1, 200)).save(buffer, format="PNG")
        elongated = client.post("/score", content=buffer.getvalue(), headers={"content-type": "image/png"})
        assert elongated.status_code in (400, 413)

"""A saved UperNet through the generic predict / batch / serve paths: the documented semantic segmentation
rows and ``/score`` answers, the label-map PNGs and overlays, and the same 4xx handling as classification."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from serve_helpers import b64, live_server, png_bomb, ready_client

from swinkit.checkpoint_io import atomic_write_json
from swinkit.cli import main
from swinkit.inference import task_of_source
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.checkpoints import save_hf
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.schemas import SemanticSegmentationResult
from swinkit.serve.service import TaskService
from swinkit.tasks import get_task

LABELS = ["sky", "road", "tree", "car"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A micro UperNet saved as a transformers folder with a small test scale, and three images."""
    root = tmp_path_factory.mktemp("seg_serve")
    torch.manual_seed(0)
    model = create_upernet("upernet_swin_micro", labels=LABELS)
    folder = root / "model"
    save_hf(model, folder)
    atomic_write_json(folder / "preprocessor_config.json", {"mmseg_test_scale": [128, 64]})
    rng = np.random.default_rng(0)
    images = []
    for i, (height, width) in enumerate([(37, 53), (64, 64), (30, 90)]):
        images.append(root / f"image{i}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images[-1])
    return folder, images


def decode_label_map(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(row["label_map"]))))


def check_rows(rows: list[dict], images) -> None:
    assert len(rows) == len(images)
    for row, path in zip(rows, images, strict=True):
        SemanticSegmentationResult.model_validate({k: v for k, v in row.items() if k != "image"})
        width, height = Image.open(path).size
        assert (row["width"], row["height"]) == (width, height)
        assert decode_label_map(row).shape == (height, width)
        assert sum(c["fraction"] for c in row["classes"]) == pytest.approx(1.0)
        assert {c["label"] for c in row["classes"]} <= set(LABELS)


def test_a_transformers_upernet_folder_is_a_segmentation_model(files):
    assert task_of_source(files[0]) is get_task("semantic_segmentation")


def test_predict_writes_rows_label_maps_and_overlays(files, tmp_path):
    folder, images = files
    out, drawn = tmp_path / "rows.jsonl", tmp_path / "drawn"
    assert main(["predict", "--model", str(folder), *map(str, images), "--output", str(out),
                 "--visualize", str(drawn)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    check_rows(rows, images)
    names = sorted(p.name for p in drawn.iterdir())
    assert names == sorted([f"image{i}.png" for i in range(3)] + [f"image{i}_labels.png" for i in range(3)])
    for i, row in enumerate(rows):
        labels = Image.open(drawn / f"image{i}_labels.png")
        assert labels.mode == "L"
        np.testing.assert_array_equal(np.asarray(labels), decode_label_map(row))
        overlay = Image.open(drawn / f"image{i}.png")
        assert overlay.height >= labels.height and overlay.width > labels.width  # the legend panel


def test_predict_prints_the_largest_classes(files, capsys):
    folder, images = files
    assert main(["predict", "--model", str(folder), str(images[0]), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(images[0]) and 2 <= len(lines) <= 3
    assert all(line.split()[0] in LABELS and line.endswith("%") for line in lines[1:])


def test_batch_streams_rows_and_resumes(files, tmp_path):
    folder, images = files
    out = tmp_path / "rows.jsonl"
    command = ["batch", "--model", str(folder), "--input", str(images[0].parent), "--output", str(out),
               "--workers", "0", "--no-progress", "--batch-size", "2"]  # fmt: skip
    assert main(command) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows(sorted(rows, key=lambda r: r["image"]), sorted(images))
    assert main(command) == 0 and out.read_text().count("\n") == 3


@pytest.fixture(scope="module")
def client(files):
    settings = ServeSettings(model=str(files[0]), max_images_per_request=4, max_body_bytes=200_000)
    with ready_client(create_app(settings)) as c:
        yield c


def test_score_answers_one_documented_object_per_image_in_order(client, files):
    _, images = files
    info = client.get("/info").json()
    assert info["swinkit_task"] == "semantic_segmentation" and info["task"] == "image-semantic-segmentation"
    assert info["labels"] == LABELS and info["preprocessing"]["mmseg_test_scale"] == [128, 64]
    answer = client.post("/score", json={"input_data": [b64(p.read_bytes()) for p in images]})
    assert answer.status_code == 200, answer.text
    check_rows(answer.json(), images)
    service = TaskService.load(str(files[0]))
    expected = [
        r.to_azure() for r in service.predictor.infer([service.prepare(Image.open(p)) for p in images])
    ]
    assert answer.json() == expected
    schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["items"] == {"$ref": "#/components/schemas/SemanticSegmentationResult"}
    documented = schema["components"]["schemas"]["SemanticSegmentationResult"]
    assert documented["required"] == ["label_map", "width", "height", "classes"]
    assert "index of its class" in documented["properties"]["label_map"]["description"]


@pytest.mark.parametrize(
    "body, status, code, index",
    [
        ({"input_data": [b64(b"not an image at all")]}, 400, "invalid_image", 0),
        ({"input_data": ["%%%not base64"]}, 400, "invalid_base64", 0),
        ({"input_data": [b64(png_bomb())]}, 413, "image_too_large", 0),
        ({"input_data": ["https://example.com/cat.jpg"]}, 400, "urls_disabled", 0),
        ({"inputs": []}, 422, "invalid_schema", None),
        ({"input_data": ["x"] * 5}, 413, "too_many_images", None),
    ],
)
def test_bad_inputs_get_the_classification_4xx(client, files, body, status, code, index):
    response = client.post("/score", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["index"] == index


def test_a_real_uvicorn_server_on_loopback_answers_the_schema(files):
    folder, images = files
    with live_server(create_app(ServeSettings(model=str(folder)))) as url:
        answer = httpx.post(
            f"{url}/score", content=images[2].read_bytes(), headers={"content-type": "image/png"}
        )
        assert answer.status_code == 200, answer.text
        check_rows(answer.json(), images[2:])


def test_predict_and_batch_take_slide_and_tta(files, tmp_path, capsys):
    folder, images = files
    out = tmp_path / "tta.jsonl"
    assert (
        main(
            [
                "predict",
                "--model",
                str(folder),
                str(images[0]),
                "--tta",
                "--mode",
                "slide",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows([row], images[:1])
    from swinkit.tasks.segmentation_predict import segmentation_predictor

    predictor = segmentation_predictor(folder, tta=True, mode="slide")
    assert (
        row["label_map"]
        == predictor.infer([predictor.prepare(Image.open(images[0]))])[0].to_azure()["label_map"]
    )
    rows = tmp_path / "batch.jsonl"
    command = ["batch", "--model", str(folder), "--input", str(images[0].parent), "--output", str(rows),
               "--workers", "0", "--no-progress", "--tta"]  # fmt: skip
    assert main(command) == 0 and rows.read_text().count("\n") == 3
    assert main(command[:-1]) == 2  # without --tta the results differ: another model owns the output
    capsys.readouterr()


def test_a_classifier_refuses_the_segmentation_flags(tmp_path, capsys):
    from serve_helpers import make_images, make_model_dir

    classifier, images = make_model_dir(tmp_path), make_images(tmp_path)
    assert main(["predict", "--model", str(classifier), str(images[0]), "--tta"]) == 2
    assert (
        capsys.readouterr().err
        == "swinkit predict: error: --tta is not a prediction option of a classification model\n"
    )

"""The endpoint in-process (TestClient): schema, results, operations routes, errors, batching, settings."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter
from serve_helpers import (
    LABELS,
    b64,
    image_server,
    loopback_only,
    make_images,
    make_model_dir,
    png_bomb,
    png_bytes,
    ready_client,
)

from swinkit.cli import build_parser
from swinkit.cli.serve import settings_from_args
from swinkit.inference import Predictor
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.batching import Batcher, BatcherClosedError, QueueFullError
from swinkit.serve.schemas import ClassificationResult, ScoreResult
from swinkit.serve.service import ClassificationService


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_app")
    return make_model_dir(root), make_images(root)


@pytest.fixture(scope="module")
def service(files):
    return ClassificationService.load(str(files[0]))


@pytest.fixture(scope="module")
def client(files, service):
    settings = ServeSettings(model=str(files[0]), max_images_per_request=4, max_body_bytes=200_000)
    with ready_client(create_app(settings, service=service)) as c:
        yield c


def post(client, body, **kwargs):
    return client.post("/score", content=body if isinstance(body, bytes) else json.dumps(body), **kwargs)


def test_results_follow_the_input_order_and_match_the_predictor(client, files):
    model_dir, images = files
    expected = Predictor.from_pretrained(model_dir).predict(images)
    rows = [[str(i), b64(path.read_bytes())] for i, path in enumerate(images)]
    body = {"input_data": {"columns": ["id", "image"], "index": [7, 8, 9], "data": rows}}
    response = post(client, body)
    assert response.status_code == 200
    results = TypeAdapter(list[ClassificationResult]).validate_python(response.json())
    for result, prediction in zip(results, expected, strict=True):
        assert result.labels == LABELS
        np.testing.assert_allclose(result.probs, prediction.probs, atol=1e-5)
    flat = post(client, {"input_data": [row[1] for row in rows]}).json()
    np.testing.assert_allclose([r["probs"] for r in flat], [r.probs for r in results], atol=1e-5)


def test_operations_routes(client, files):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["labels"] == LABELS and info["task"] == "image-classification"
    assert info["preprocessing"]["size"] == {"height": 64, "width": 64}
    post(client, {"input_data": ["@@"]})
    assert post(client, {"input_data": [b64(files[1][0].read_bytes())]}).status_code == 200  # one batch run
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'swinkit_requests_total{route="/score",status="400"}' in text
    assert 'swinkit_request_duration_seconds_bucket{route="/score",le="+Inf"}' in text
    assert "swinkit_batch_size_count" in text and "swinkit_queue_depth 0" in text


def test_openapi_documents_request_and_every_result_shape(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in (
        "ScoreRequest",
        "ScoreInputData",
        "ClassificationResult",
        "DetectionResult",
        "SegmentationResult",
    ):
        assert name in components
    body = schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ScoreRequest"}
    assert client.get("/docs").status_code == 200


def test_detection_and_segmentation_shapes_validate():
    box = {"box": {"topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.9}, "label": "cat", "score": 0.8}
    adapter = TypeAdapter(ScoreResult)
    assert type(adapter.validate_python({"boxes": [box]})).__name__ == "DetectionResult"
    segmented = adapter.validate_python({"boxes": [{**box, "polygon": [[0.1, 0.2, 0.5, 0.2, 0.5, 0.9]]}]})
    assert type(segmented).__name__ == "SegmentationResult"
    with pytest.raises(ValueError):
        adapter.validate_python({"boxes": [{**box, "box": {**box["box"], "bottomX": 1.5}}]})


GOOD = b64(png_bytes())


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "index"),
    [
        (b"{not json", None, 400, "invalid_json", None),
        (b'{"inputs": []}', None, 422, "invalid_schema", None),
        ({"input_data": {"columns": ["image"], "data": []}}, None, 422, "invalid_schema", None),
        ({"input_data": [GOOD, 3]}, None, 422, "invalid_schema", 1),
        (
            {"input_data": {"columns": ["id", "image"], "data": [["a", GOOD], ["b"]]}},
            None,
            422,
            "invalid_schema",
            1,
        ),
        (
            {"input_data": {"columns": ["image"], "index": [1, 2], "data": [GOOD]}},
            None,
            422,
            "invalid_schema",
            None,
        ),
        ({"input_data": {"columns": ["picture"], "data": [GOOD]}}, None, 422, "invalid_schema", None),
        ({"input_data": [b64(b"not an image at all")]}, None, 400, "invalid_image", 0),
        ({"input_data": [GOOD, "%%%not base64"]}, None, 400, "invalid_base64", 1),
        ({"input_data": ["data:image/png,rawbytes"]}, None, 400, "invalid_data_uri", 0),
        ({"input_data": [b64(png_bomb())]}, None, 413, "image_too_large", 0),
        ({"input_data": ["https://example.com/cat.jpg"]}, None, 400, "urls_disabled", 0),
        ({"input_data": ["file:///etc/passwd"]}, None, 400, "unsupported_scheme", 0),
        ({"input_data": [GOOD] * 5}, None, 413, "too_many_images", None),
        ({"input_data": ["A" * 300_000]}, None, 413, "body_too_large", None),
        (b'{"input_data": []}', {"content-type": "text/plain"}, 415, "unsupported_media_type", None),
        (b"[" * 150_000 + b"]" * 150_000, None, 413, "body_too_large", None),
        (b"[" * 1000 + b"]" * 1000, None, 400, "invalid_json", None),  # nesting beyond the parser limit
    ],
)
def test_hostile_input_gets_its_4xx(client, files, body, headers, status, code, index):
    response = post(client, body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {"message": response.json()["error"]["message"], "index": index, "code": code}
    }
    assert post(client, {"input_data": [b64(files[1][0].read_bytes())]}).status_code == 200


def test_bomb_is_refused_from_its_header(client):
    message = post(client, {"input_data": [b64(png_bomb())]}).json()["error"]["message"]
    assert message == (
        "item 0: image is 10000x10000 = 100,000,000 pixels; this server accepts at most 89,478,485 "
        "(SWINKIT_MAX_PIXELS)"
    )


def test_streamed_body_over_the_limit_is_cut_off(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    response = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_unknown_route_and_method(client):
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    response = client.get("/score")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_url_inputs_when_allowed(files, service):
    image = files[1][0].read_bytes()

    async def resolve(host: str, port: int) -> list[str]:
        return {"evil.example": ["10.0.0.5"]}[host]

    settings = ServeSettings(
        model=str(files[0]), allow_urls=True, url_allowed_networks=["127.0.0.1/32"], warmup=False
    )
    with image_server(image) as url, loopback_only() as connected:
        with ready_client(create_app(settings, service=service, resolver=resolve)) as client:
            by_url = post(client, {"input_data": [f"{url}/image.png"]}).json()
            by_value = post(client, {"input_data": [b64(image)]}).json()
            np.testing.assert_allclose(by_url[0]["probs"], by_value[0]["probs"], atol=1e-6)
            refused = post(client, {"input_data": [b64(image), "http://evil.example/cat.png"]})
            assert refused.status_code == 400 and refused.json()["error"]["index"] == 1
            assert refused.json()["error"]["code"] == "url_forbidden"
    assert connected == ["127.0.0.1"]


class _BlockingService:
    """A service whose inference waits until released, to fill the queue."""

    task, labels = "image-classification", ["a"]

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def prepare(self, image) -> torch.Tensor:
        return torch.zeros(3, 4, 4)

    def infer(self, pixels) -> list[BaseModel]:
        self.entered.set()
        self.release.wait(10)
        return [ClassificationResult(probs=[1.0], labels=["a"]) for _ in pixels]

    def example(self) -> torch.Tensor:
        return torch.zeros(3, 4, 4)

    def info(self) -> dict:
        return {"problem_type": "single_label_classification", "preprocessing": {}}


def test_full_queue_answers_503_with_retry_after(files):
    service = _BlockingService()
    settings = ServeSettings(
        model="stub",
        max_batch_size=1,
        max_queue_size=1,
        max_images_per_request=1,
        warmup=False,
        retry_after_s=2,
    )
    body = {"input_data": [b64(files[1][0].read_bytes())]}
    with ready_client(create_app(settings, service=service)) as client:
        state = client.app.state.serve
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(post(client, body).status_code)) for _ in range(2)
        ]
        threads[0].start()
        assert service.entered.wait(10)  # the first request is in the model
        threads[1].start()
        deadline = time.monotonic() + 10
        while state.batcher.pending < 1:  # the second one waits in the queue, which is now full
            assert time.monotonic() < deadline
            time.sleep(0.01)
        full = post(client, body)
        assert full.status_code == 503 and full.headers["retry-after"] == "2"
        assert full.json()["error"]["code"] == "overloaded"
        service.release.set()
        for thread in threads:
            thread.join()
        assert answers == [200, 200]


def test_live_while_loading_ready_once_warmed_up(files):
    service = _BlockingService()  # the warm-up batch waits in the model until released
    body = {"input_data": [b64(files[1][0].read_bytes())]}
    with TestClient(create_app(ServeSettings(model="stub"), service=service)) as client:
        assert service.entered.wait(10)
        assert client.get("/health").status_code == 200
        for response in (client.get("/ready"), post(client, body), client.get("/info")):
            assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
            assert response.headers["retry-after"] == "1"
        service.release.set()
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert post(client, body).status_code == 200


def test_model_that_cannot_load_fails_health_and_calls_back(tmp_path):
    failures: list[BaseException] = []
    app = create_app(ServeSettings(model=str(tmp_path / "missing")), on_failure=failures.append)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for response in (client.get("/health"), client.get("/ready"), post(client, {"input_data": ["AAAA"]})):
            assert response.status_code == 503 and response.json()["error"]["code"] == "model_failed"
    assert "missing" in str(failures[0])


def test_batcher_forms_batches_and_drains_on_close():
    sizes: list[int] = []

    def infer(items: list[int]) -> list[int]:
        time.sleep(0.05)
        return [2 * x for x in items]

    async def go() -> None:
        batcher = Batcher(infer, max_batch_size=4, max_delay_s=0.05, max_queue_size=10, on_batch=sizes.append)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(9)))
        assert results == [[2 * i] for i in range(9)]
        with pytest.raises(QueueFullError):
            await batcher.submit(list(range(11)))
        queued = asyncio.gather(*(batcher.submit([i]) for i in range(6)))
        await asyncio.sleep(0)
        await batcher.close()
        assert await queued == [[2 * i] for i in range(6)]
        with pytest.raises(BatcherClosedError):
            await batcher.submit([1])

    asyncio.run(go())
    assert sizes[:3] == [4, 4, 1] and sum(sizes) == 15 and max(sizes) <= 4


def test_cancelled_requests_do_not_stall_the_batcher():
    async def go() -> None:
        batcher = Batcher(lambda items: items, max_batch_size=2, max_delay_s=0.05)
        batcher.start()
        abandoned = asyncio.ensure_future(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0)
        abandoned.cancel()
        assert await batcher.submit([4]) == [4]
        await batcher.close()

    asyncio.run(go())


def test_settings_precedence_flags_over_env_over_file(tmp_path, monkeypatch):
    config = tmp_path / "serve.yaml"
    config.write_text("model: from-file\nport: 9001\nmax_batch_size: 4\nmax-delay-ms: 3\n")
    monkeypatch.setenv("SWINKIT_PORT", "9002")
    monkeypatch.setenv("SWINKIT_MAX_BATCH_SIZE", "6")
    args = build_parser().parse_args(["serve", "--config", str(config), "--max-batch-size", "8"])
    settings = settings_from_args(args)
    assert (settings.model, settings.port, settings.max_batch_size, settings.max_delay_ms) == (
        "from-file",
        9002,
        8,
        3,
    )
    config.write_text("model: x\nmax_batch_sise: 4\n")
    with pytest.raises(ValueError, match="max_batch_sise"):
        settings_from_args(args)
    monkeypatch.delenv("SWINKIT_MODEL", raising=False)
    with pytest.raises(ValueError, match="model"):
        settings_from_args(build_parser().parse_args(["serve"]))


def test_metrics_count_scored_images(client, files):
    def images_total() -> float:
        lines = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("swinkit_images_total")
        ]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = images_total()
    image = b64(files[1][0].read_bytes())
    assert post(client, {"input_data": [image] * 3}).status_code == 200
    assert images_total() == before + 3


def test_a_request_larger_than_the_queue_is_refused_at_start_up():
    with pytest.raises(ValueError, match="could never be queued"):
        ServeSettings(model="m", max_queue_size=4, max_images_per_request=5)

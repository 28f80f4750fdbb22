"""schemathesis against a live loopback server: requests generated from the server's own OpenAPI schema
(valid ones for every operation and body type, schema-violating ones for ``/score``) never get a 5xx, every
answer follows the schema, and the server still answers afterwards."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import b64, make_images, make_model_dir

from swinkit.serve import ServeSettings, create_app
from swinkit.serve.service import ClassificationService

EXAMPLES = 30  # per operation, body media type and generation mode
# positive_data_acceptance is left out: a schema-valid string is rarely a decodable image, so 400 is right.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[str, bytes]]:
    """The real app under uvicorn on a free 127.0.0.1 port, in a thread; its URL and a valid image."""
    root = tmp_path_factory.mktemp("schemathesis")
    model_dir, images = make_model_dir(root), make_images(root)
    settings_ = ServeSettings(model=str(model_dir), max_body_bytes=200_000, max_images_per_request=4)
    app = create_app(settings_, service=ClassificationService.load(str(model_dir)))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started or httpx.get(f"{url}/ready").status_code != 200:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not become ready"
        time.sleep(0.05)
    try:
        yield url, images[0].read_bytes()
    finally:
        server.should_exit = True
        thread.join(30)


def _fuzz(strategy, url: str, checks: list, counts: Counter, key: tuple) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        counts[key] += 1
        case.call_and_validate(base_url=url, timeout=30, checks=checks)

    run()


@pytest.mark.slow  # about 25 s: 250 generated requests
def test_generated_requests_follow_the_schema_and_never_get_a_5xx(live):
    url, image = live
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    counts: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        body = operation.definition.raw.get("requestBody")
        for media_type in body["content"] if body else [None]:
            strategy = operation.as_strategy(media_type=media_type)
            _fuzz(strategy, url, CHECKS, counts, (operation.label, media_type, "valid"))
        if body:
            strategy = operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
            _fuzz(strategy, url, [negative_data_rejection, *CHECKS], counts, (operation.label, "invalid"))
    assert {key[0] for key in counts} == {
        "POST /score",
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /info",
    }
    assert counts[("POST /score", "application/json", "valid")] >= 15
    assert counts[("POST /score", "invalid")] >= 15
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    scored = httpx.post(f"{url}/score", json={"input_data": [b64(image)]})
    assert scored.status_code == 200 and len(scored.json()) == 1

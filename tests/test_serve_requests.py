"""What clients send and see beyond the JSON schema: header-only refusals, raw image bodies, offline docs,
the access log."""

from __future__ import annotations

import json
import logging
import re

import pytest
from serve_helpers import b64, make_images, make_model_dir, png_header, ready_client

import swinkit.data.decode
from swinkit.data.decode import ImageTooLargeError, decode_image
from swinkit.serve import ServeSettings, create_app
from swinkit.serve.service import ClassificationService


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_requests")
    return make_model_dir(root), make_images(root)


@pytest.fixture(scope="module")
def client(files):
    service = ClassificationService.load(str(files[0]))
    settings = ServeSettings(model=str(files[0]), max_aspect_ratio=50, max_body_bytes=200_000)
    with ready_client(create_app(settings, service=service)) as c:
        yield c


def score_json(client, images: list[bytes]):
    return client.post("/score", content=json.dumps({"input_data": [b64(data) for data in images]}))


def test_decompression_bomb_names_the_configured_limit_not_pillows():
    bomb = png_header(20_000, 20_000)  # 400 M pixels declared in 33 bytes: over Pillow's own guard too
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(bomb, name="bomb.png")
    assert str(info.value) == "bomb.png: 400,000,000 pixels exceed the limit of 89,478,485"
    assert (info.value.pixels, info.value.limit) == (400_000_000, 89_478_485)


def test_a_limit_above_pillows_own_guard_names_pillows():
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_header(20_000, 20_000), name="bomb.png", max_pixels=10**9)
    assert str(info.value) == (
        "bomb.png: 400,000,000 pixels exceed Pillow's limit of 178,956,970 (2 * PIL.Image.MAX_IMAGE_PIXELS)"
    )


def test_server_refuses_a_bomb_with_its_pixel_setting(client):
    response = score_json(client, [png_header(20_000, 20_000)])
    assert response.status_code == 413
    assert response.json()["error"] == {
        "message": "item 0: image is 400,000,000 pixels; this server accepts at most 89,478,485 "
        "(SWINKIT_MAX_PIXELS)",
        "index": 0,
        "code": "image_too_large",
    }


def test_aspect_ratio_is_refused_from_the_header_before_any_decoding(client, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(swinkit.data.decode, "_first_frame_rgb", no_decoding)
    response = score_json(client, [png_header(3000, 40)])  # 75:1 (server limit 50:1), no pixel data at all
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "item 0: 3000x40 is too elongated (more than 50:1)"


_EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_this_server(client, page):
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""", html.text)
    assert len(urls) >= 3, html.text  # script, stylesheet or icon, and the schema
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert _EXPECTED_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
    assert not re.search(r"https?://", html.text), "the page names another host"


@pytest.mark.parametrize(
    "media", ["image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream"]
)
def test_a_raw_image_body_scores_like_its_json_form(client, files, media):
    data = files[1][1].read_bytes() if media == "image/jpeg" else files[1][0].read_bytes()
    raw = client.post("/score", content=data, headers={"content-type": media})
    assert raw.status_code == 200, raw.text
    assert raw.json() == score_json(client, [data]).json()


def test_raw_bodies_that_are_not_images_or_of_another_type(client):
    garbage = client.post("/score", content=b"not an image", headers={"content-type": "image/png"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_image"
    other = client.post("/score", content=b"GIF89a", headers={"content-type": "text/plain"})
    assert other.status_code == 415
    assert other.json()["error"]["message"] == (
        "the body must be application/json or one image "
        "(image/jpeg, image/png, image/webp, image/bmp, application/octet-stream), not text/plain"
    )
    too_big = client.post("/score", content=b"\0" * 300_000, headers={"content-type": "image/jpeg"})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"


def _access_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "swinkit.serve.access" and r.levelno == logging.INFO
    ]


def test_every_request_gets_an_access_log_line(client, files, caplog):
    caplog.set_level(logging.INFO, logger="swinkit.serve.access")
    image = files[1][0].read_bytes()
    client.get("/health")
    score_json(client, [image, image])
    client.post("/score", content=image, headers={"content-type": "image/png"})
    client.post("/score", content=b"{oops")
    client.get("/nope")
    line = re.compile(r"^(GET|POST) (\S+) (\d{3}) (\d+\.\d) ms (\d+) images$")
    parsed = [line.match(text) for text in _access_lines(caplog)]
    assert all(parsed), _access_lines(caplog)
    summary = [(m[1], m[2], int(m[3]), int(m[5])) for m in parsed]
    assert summary == [
        ("GET", "/health", 200, 0),
        ("POST", "/score", 200, 2),
        ("POST", "/score", 200, 1),
        ("POST", "/score", 400, 0),
        ("GET", "/nope", 404, 0),
    ]
    assert float(parsed[1][4]) > 0  # scoring two images takes measurable time


def test_access_log_lines_cannot_be_forged_through_the_path(client, caplog):
    caplog.set_level(logging.INFO, logger="swinkit.serve.access")
    client.get("/a%0AGET%20/health%20200?x=%0A")
    (line,) = _access_lines(caplog)
    assert "\n" not in line and line.startswith("GET /a%0AGET%20/health%20200 404 ")

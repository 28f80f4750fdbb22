"""What clients send and see beyond the JSON schema: header-only refusals, raw image bodies, offline docs,
the access log."""

from __future__ import annotations

import json
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

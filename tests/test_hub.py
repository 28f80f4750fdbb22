"""Hub ids resolve through huggingface_hub's cache (offline here), built locally in the cache layout."""

import socket

import pytest
import torch
from huggingface_hub import constants as hub_constants

import swinkit
from swinkit.cli import main

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A huggingface_hub cache holding ``org/swin-micro`` at refs/main, offline, with sockets disabled."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--swin-micro" / "snapshots" / COMMIT
    model = swinkit.create_model("swin_micro", labels=["cat", "dog", "eel"]).eval()
    swinkit.save_pretrained(model, snapshot, preprocessing=swinkit.get_preset("swin_micro").preprocessing)
    (cache / "models--org--swin-micro" / "refs").mkdir()
    (cache / "models--org--swin-micro" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # read at import time
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return model


def test_cached_hub_id_loads(hub_cache):
    loaded = swinkit.from_pretrained("org/swin-micro").eval()
    assert loaded.config.labels == ("cat", "dog", "eel")
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), hub_cache(pixels), atol=1e-5, rtol=0)


def test_cached_hub_id_converts(hub_cache, tmp_path, capsys):
    assert main(["convert", "org/swin-micro", str(tmp_path / "out")]) == 0
    assert "detected layout: hf" in capsys.readouterr().out
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()


def test_uncached_hub_id_gives_one_clear_sentence(hub_cache):
    with pytest.raises(ValueError) as error:
        swinkit.from_pretrained("org/not-downloaded")
    message = str(error.value)
    assert "'org/not-downloaded'" in message and "cache" in message
    assert "\n" not in message and message.count(". ") == 0

"""Checkpoints are read without executing code, and every write is atomic."""

import pickle

import pytest
import torch

import swinkit
from swinkit import checkpoint_io
from swinkit.checkpoint_io import UnsafeCheckpointError
from swinkit.cli import main


class Payload:
    """Unpickling this object runs ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def poisoned(tmp_path):
    """A torch.save'd checkpoint whose state dict is fine but which also carries a code payload."""
    model = swinkit.create_model("swin_micro", num_classes=2)
    path = tmp_path / "poisoned.pth"
    marker = tmp_path / "executed"
    torch.save({"model": model.state_dict(), "extra": Payload(marker)}, path)
    return path, marker


def test_the_payload_is_live(tmp_path):
    """The payload does run under plain unpickling, so the refusals below are meaningful."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()


def test_convert_refuses_pickled_code(poisoned, tmp_path, capsys):
    path, marker = poisoned
    assert main(["convert", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert "refused" in first and "nothing was executed" in first and str(path) in first
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_from_pretrained_refuses_pickled_code(poisoned):
    path, marker = poisoned
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        swinkit.from_pretrained(path)
    assert not marker.exists()


def test_plain_torch_checkpoint_loads(tmp_path):
    model = swinkit.create_model("swin_micro", num_classes=2).eval()
    path = tmp_path / "plain.pth"
    torch.save({"model": model.state_dict(), "epoch": 4, "config": {"lr": 0.1}}, path)
    loaded = swinkit.from_pretrained(path, preset="swin_micro").eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), model(pixels), atol=1e-5, rtol=0)


def test_failed_write_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    model = swinkit.create_model("swin_micro", num_classes=2)
    swinkit.save_pretrained(model, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        swinkit.save_pretrained(swinkit.create_model("swin_micro", num_classes=2), tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]


def test_pickled_code_in_an_hf_folder_is_refused(tmp_path):
    marker = tmp_path / "executed"
    model = swinkit.create_model("swin_micro", num_classes=2)
    swinkit.save_pretrained(model, tmp_path / "folder")
    (tmp_path / "folder" / "model.safetensors").unlink()
    torch.save(
        {"weights": model.state_dict(), "extra": Payload(marker)}, tmp_path / "folder" / "pytorch_model.bin"
    )
    with pytest.raises(UnsafeCheckpointError):
        swinkit.from_pretrained(tmp_path / "folder")
    assert not marker.exists()

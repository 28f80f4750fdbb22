"""One output rule for every writer: ``-`` is stdout, devices and FIFOs are written through, files atomically."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from serve_helpers import make_images, make_model_dir

from swinkit.checkpoint_io import (
    atomic_write_json,
    atomic_write_text,
    load_state_file,
    open_output,
    save_safetensors,
    save_torch,
)
from swinkit.cli import main


def _drain(fifo: Path, received: list[bytes]) -> threading.Thread:
    """A thread reading ``fifo`` to its end into ``received``."""

    def read() -> None:
        with open(fifo, "rb") as f:
            received.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _write_to_fifo(tmp_path: Path, write, name: str = "pipe", link: bool = False) -> tuple[Path, bytes]:
    """Run ``write(destination)`` with a reader on a FIFO (or a symlink to one); the bytes the reader got."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    destination = fifo
    if link:
        destination = tmp_path / f"{name}.link"
        destination.symlink_to(fifo)
    received: list[bytes] = []
    reader = _drain(fifo, received)
    write(destination)
    reader.join(timeout=10)
    assert not reader.is_alive(), "the FIFO reader never saw the end of the data"
    return destination, received[0]


def test_dash_is_standard_output_text_and_binary(capsysbinary):
    with open_output("-", "w") as f:
        f.write("hello\n")
    with open_output("-", "wb") as f:
        f.write(b"\x00bytes")
    assert capsysbinary.readouterr().out == b"hello\n\x00bytes"
    assert not Path("-").exists()


def test_atomic_write_json_to_dash_prints_it(capsys):
    atomic_write_json("-", {"a": 1})
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert not Path("-").exists()


def test_fifo_receives_the_bytes_and_stays_a_fifo(tmp_path):
    fifo, data = _write_to_fifo(tmp_path, lambda d: atomic_write_text(d, "through the pipe\n"))
    assert data == b"through the pipe\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left beside it


def test_symlink_to_fifo_stays_a_symlink(tmp_path):
    link, data = _write_to_fifo(tmp_path, lambda d: atomic_write_json(d, [1, 2]), link=True)
    assert json.loads(data) == [1, 2]
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(link).st_mode)


def test_safetensors_and_torch_state_go_through_a_fifo(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    _, data = _write_to_fifo(tmp_path, lambda d: save_safetensors(tensors, d), name="st")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(data)
    assert torch.equal(load_state_file(copy)["w"], tensors["w"])
    _, data = _write_to_fifo(tmp_path, lambda d: save_torch({"w": tensors["w"]}, d), name="pt")
    copy = tmp_path / "copy.pt"
    copy.write_bytes(data)
    assert torch.equal(load_state_file(copy)["w"], tensors["w"])


# Writers must never rename over or unlink anything in /dev; a regression fails here instead of, as root,
# replacing the machine's /dev/null or /dev/stdout.
GUARD = """
import os
def _guarded(real):
    def call(*args, **kwargs):
        if any(str(a).startswith("/dev/") for a in args):
            raise AssertionError(f"{real.__name__} of {args} in /dev")
        return real(*args, **kwargs)
    return call
os.replace, os.unlink, os.rename = _guarded(os.replace), _guarded(os.unlink), _guarded(os.rename)
"""


@pytest.fixture
def guard_dev():
    saved = os.replace, os.unlink, os.rename
    exec(GUARD, {})
    yield
    os.replace, os.unlink, os.rename = saved


def test_dev_null_stays_a_character_device(guard_dev):
    save_safetensors({"w": torch.zeros(3)}, "/dev/null")
    atomic_write_text("/dev/null", "discarded")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_regular_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o640)
    with pytest.raises(RuntimeError, match="mid-write"):
        with open_output(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("failure mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # kept, as open() would


def test_symlink_to_regular_file_keeps_the_link_and_replaces_the_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_json(link, {"x": 1})
    assert link.is_symlink()
    assert json.loads(target.read_text()) == {"x": 1}


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    return make_model_dir(root), make_images(root)


def test_predict_output_dash_prints_jsonl(model_and_images, capsys, tmp_path, monkeypatch):
    model, images = model_and_images
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", str(model), "--output", "-", *map(str, images)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in images]
    assert all(len(row["probs"]) == 3 for row in rows)
    assert not (tmp_path / "-").exists()


def test_predict_output_fifo_streams_jsonl(model_and_images, tmp_path):
    model, images = model_and_images
    argv = ["predict", "--model", str(model), *map(str, images), "--output"]
    fifo, data = _write_to_fifo(tmp_path, lambda d: main([*argv, str(d)]))
    assert len(data.decode().splitlines()) == len(images)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize(
    "argv", [["evaluate", "--model", "m", "--data", "d", "--output", "-"], ["convert", "m", "-"]]
)
def test_folder_outputs_refuse_dash(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "'-' (standard output)" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_dev_stdout_redirected_to_a_file_writes_into_that_file(tmp_path):
    out = tmp_path / "redirected.txt"
    code = (
        GUARD
        + "from swinkit.checkpoint_io import atomic_write_text\natomic_write_text('/dev/stdout', 'via stdout')"
    )
    with open(out, "w") as f:
        inode = os.fstat(f.fileno()).st_ino
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, timeout=60)
    assert out.read_text() == "via stdout"
    assert out.stat().st_ino == inode  # the shell's file, not a replacement

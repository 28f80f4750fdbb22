"""What a new user hits: each misleading message is one clear sentence naming the real cause."""

from __future__ import annotations

import re

import pytest

from swinkit.cli import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert re.fullmatch(r"swinkit \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_unknown_flag_prints_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--bogus", "--model", "m", "x.jpg"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: swinkit predict ")
    assert "swinkit predict: error: unrecognized arguments: --bogus" in err


def test_typo_in_local_path_says_the_path_does_not_exist(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["predict", "--model", "runs/nope", "x.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swinkit predict: error: no file or folder runs/nope, and no Hugging Face hub id")
    assert len(err.splitlines()) == 1
    assert main(["predict", "--model", "runs/a/nope", "x.jpg"]) == 2
    err = capsys.readouterr().err
    assert "no file or folder runs/a/nope" in err and "cache" not in err


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("x.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "it looks like a JPEG image"),
        ("x.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "it looks like a PNG image"),
        ("notes.pt", b"these are not weights\n", "it looks like a text file"),
        ("empty.safetensors", b"", "it is empty"),
    ],
)
def test_convert_of_a_non_checkpoint_names_what_it_is(name, data, kind, capsys, tmp_path):
    source = tmp_path / name
    source.write_bytes(data)
    assert main(["convert", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"swinkit convert: error: {source} is not a checkpoint file ({kind})\n"
    assert not (tmp_path / "out").exists()

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

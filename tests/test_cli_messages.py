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

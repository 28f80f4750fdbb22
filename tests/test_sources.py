"""swinkit.sources (where a checkpoint comes from) split from swinkit.loading, and the house file-size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

import swinkit
from swinkit import loading, sources

SRC = Path(swinkit.__file__).parent
MOVED = (
    "DESCRIPTION_KEYS",
    "PREPROCESSOR_FILE",
    "description_metadata",
    "read_description",
    "resolve_source",
)


def test_every_source_file_keeps_within_the_house_limit_of_500_lines():
    long = {
        str(f.relative_to(SRC)): n for f in SRC.rglob("*.py") if (n := len(f.read_text().splitlines())) > 500
    }
    assert long == {}


@pytest.mark.parametrize("name", MOVED)
def test_names_that_moved_to_sources_still_import_from_loading(name):
    assert getattr(loading, name) is getattr(sources, name)


def test_resolve_source_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder .*nor a preset name"):
        sources.resolve_source(str(tmp_path / "absent.pt"))
    assert sources.resolve_source(tmp_path) == tmp_path


def test_the_public_loading_api_is_unchanged():
    assert swinkit.from_pretrained is loading.from_pretrained
    assert swinkit.load_checkpoint is loading.load_checkpoint
    assert swinkit.save_pretrained is loading.save_pretrained

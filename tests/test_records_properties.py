"""Property tests: whatever bytes a CSV, JSONL or folder holds, the readers return records or raise the
documented ValueError / FileNotFoundError, never anything else."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from swinkit.batch import iter_inputs, load_item
from swinkit.data.datasets import load_dataset

TOKENS = ["path,label", "filename,labels", "image,id", "a.png", "b.png", "images/a.png", "can", "can carton",
          ",", ";", '"', "\n", "\r\n", " ", '{"image_url": "a.png", "label": "can"}', '{"label": ["x", 1]}',
          '{"image": "aGVsbG8="}', '"b.png"', "[1, 2]", "\ufeff", "\x00", "data:,", "azureml://x/paths/a.png"]  # fmt: skip
LONG_NAME = "x" * 300 + ".png"  # longer than a file system allows a name to be
TOKENS += [LONG_NAME, f'{{"image_url": "{LONG_NAME}", "label": "can"}}', "[" * 3000]
contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from(TOKENS), max_size=30).map(lambda parts: "".join(parts).encode()),
)
EXPECTED = (ValueError, FileNotFoundError)


def _read_all(source: Path) -> None:
    """Every reader over ``source``: training's, and batch's records each decoded."""
    try:
        load_dataset(source)
    except EXPECTED:
        pass
    try:
        records = list(iter_inputs(source))
    except EXPECTED:
        return
    for record in records:
        try:
            load_item(record)
        except ValueError:  # ImageDecodeError
            pass


def _with_images(folder: Path) -> None:
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)


@settings(max_examples=50, deadline=None)
@given(data=contents, suffix=st.sampled_from([".csv", ".jsonl", ".json"]))
def test_any_listing_file_gives_records_or_a_documented_error(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _with_images(folder)
        (folder / f"in{suffix}").write_bytes(data)
        _read_all(folder / f"in{suffix}")


names = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(files=st.lists(st.tuples(names, names, st.binary(max_size=64)), max_size=6))
def test_any_folder_gives_records_or_a_documented_error(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        for folder, name, data in files:
            if folder in (".", "..") or name in (".", ".."):
                continue
            try:
                (root / folder).mkdir(exist_ok=True)
                (root / folder / name).write_bytes(data)
            except OSError:  # a name the file system refuses (too long, a clash with a file)
                continue
        _read_all(root)

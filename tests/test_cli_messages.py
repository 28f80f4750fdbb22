"""What a new user hits: each misleading message is one clear sentence naming the real cause."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import small_config

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


def _colors(root: Path, per_class: int) -> Path:
    """Two class folders of flat 32 px images (red, blue) with a little noise."""
    rng = np.random.default_rng(0)
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.integers(0, 40, (32, 32, 3)) + np.array(color), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


class _SlowStart:
    """A loader whose first batch arrives 1000 s (of a fake clock) after iteration starts."""

    def __init__(self, loader, clock: list[float]) -> None:
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.clock[0] += 1000.0
        yield from self.loader


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run whose loader starts slowly (on a fake clock); (run folder, trainer)."""
    from swinkit.engine import build, trainer

    root = tmp_path_factory.mktemp("finished")
    data = _colors(root / "data", 6)
    config = small_config(**{"data.train": str(data), "run.output": str(root / "run"), "schedule.epochs": 1})
    clock = [0.0]

    def perf_counter() -> float:
        clock[0] += 0.001
        return clock[0]

    def train_loader(*args, **kwargs):
        loader, dataset, sampler = original(*args, **kwargs)
        return _SlowStart(loader, clock), dataset, sampler

    original = build.train_loader
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "train_loader", train_loader)
        patch.setattr(trainer.time, "perf_counter", perf_counter)
        fitted = trainer.Trainer(config)
        fitted.fit()
    torch.set_num_threads(threads)
    return root / "run", fitted


@pytest.mark.slow
def test_first_epoch_throughput_excludes_loader_start_up(finished_run):
    _, fitted = finished_run
    assert fitted.images_per_second > 100  # counting the 1000 s start-up it would be below 1 img/s


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_rewrites_nothing(finished_run, capsys):
    run, _ = finished_run
    outputs = [run / "metrics.json", run / "model.safetensors", run / "checkpoints" / "last.pt"]
    before = [p.stat().st_mtime_ns for p in outputs]
    assert main(["train", "--resume", "--output", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out == f"{run} already finished (1 epochs, best at epoch 1); nothing to resume\n"
    assert [p.stat().st_mtime_ns for p in outputs] == before


def test_resume_without_a_checkpoint_says_there_is_none(tmp_path, capsys):
    for run in (tmp_path / "empty", tmp_path / "missing"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["train", "--resume", "--output", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"swinkit train: error: no checkpoint to resume in {run} ")
        assert "training data" not in err


def test_wrong_preset_is_reported_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    from swinkit.engine import build

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read before the preset was checked")

    monkeypatch.setattr(build, "load_run_data", refuse)
    data = _colors(tmp_path / "data", 1)
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "run"), "--preset", "swin_tiyn"]
    assert main(argv) == 2
    assert "unknown model preset 'swin_tiyn'" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "nope"),
                "--output",
                str(tmp_path / "run"),
                "--preset",
                "swin_micro",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == f"swinkit train: error: --data {tmp_path / 'nope'} does not exist\n"


def test_serve_with_a_bad_model_is_one_error_line_before_any_server_start(tmp_path, capsys, monkeypatch):
    import uvicorn

    def refuse(self, *args, **kwargs):
        raise AssertionError("uvicorn started although the model cannot be loaded")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)
    bad = tmp_path / "weights.pt"
    bad.write_text("not weights\n")
    assert main(["serve", "--model", str(bad), "--port", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"swinkit serve: error: could not load {bad}: {bad} is not a checkpoint file (it looks like a text file)"
    ]


def _micro_model(folder):
    import swinkit

    swinkit.save_pretrained(swinkit.create_model("swin_micro", labels=["a", "b"]), folder)
    return folder


def test_a_file_where_an_output_folder_goes_is_one_sentence(tmp_path, capsys):
    model = _micro_model(tmp_path / "model")
    blocker = tmp_path / "efile"
    blocker.write_text("keep me")
    assert main(["convert", str(model), str(blocker)]) == 2
    assert (
        capsys.readouterr().err
        == f"swinkit convert: error: cannot write {blocker}: {blocker} is a file, not a folder\n"
    )
    images = tmp_path / "data" / "a"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(images / "0.png")
    assert (
        main(["evaluate", "--model", str(model), "--data", str(tmp_path / "data"), "--output", str(blocker)])
        == 2
    )
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err and blocker.read_text() == "keep me"


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    model = _micro_model(tmp_path / "model")
    for i in range(6):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    command = [sys.executable, "-m", "swinkit", "predict", "--model", str(model), "--output", "-"]
    command += [str(tmp_path / f"{i}.png") for i in range(6)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first row
    _, err = process.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert process.returncode == 141


def test_ctrl_c_in_train_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from swinkit.engine import trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "fit", interrupted)
    run = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path), "--output", str(run), "--preset", "swin_micro"])
    assert code == 130
    assert capsys.readouterr().err == (
        f"interrupted: the run in {run} continues from its last checkpoint with "
        f"swinkit train --output {run} --resume\n"
    )


def test_commands_other_than_serve_do_not_import_the_server():
    import subprocess
    import sys

    probe = "import sys; from swinkit.cli import build_parser; build_parser(); print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False False"

"""``seg.val_interval``: an iteration-based segmentation run validates every ``val_interval`` iterations
and at its last one, as mmengine's ``IterBasedTrainLoop`` (``_iter % val_interval == 0 or _iter ==
_max_iters``), not at epoch ends; such a run resumes bit-exactly from a mid-epoch validation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from segmentation_scenes import write_pairs
from test_segmentation_train import _tiny_run_args
from test_train import one_thread  # noqa: F401  (autouse: one torch thread)

from swinkit.cli import build_parser, main
from swinkit.cli import train as train_cli
from swinkit.engine.trainer import Trainer

INTERVAL = ["--set", "schedule.iterations=5", "--set", "seg.val_interval=3"]


class _Stop(Exception):
    pass


def _stop_after_the_first_validation(line):
    if " iter 3/5 " in line:
        raise _Stop


@pytest.mark.slow
def test_validation_every_interval_and_at_the_last_iteration_and_resume(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 6, size=48)  # 4 training images: 2 steps per epoch, 3 epochs
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*_tiny_run_args(data, full), *INTERVAL]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/3  iter 3/5  train_loss" in printed and "epoch 3/3  iter 5/5  train_loss" in printed
    report = json.loads((full / "metrics.json").read_text())
    assert [(h["epoch"], h["iteration"]) for h in report["history"]] == [(2, 3), (3, 5)]
    assert report["epochs_run"] == 3 and report["best_iteration"] in (3, 5)
    assert report["best_epoch"] == {3: 2, 5: 3}[report["best_iteration"]]

    args = build_parser().parse_args([*_tiny_run_args(data, cut), *INTERVAL])
    with pytest.raises(_Stop):
        Trainer(train_cli.resolve_config(args), reporter=_stop_after_the_first_validation).fit()
    assert main(["train", "--output", str(cut), "--resume", "--no-progress"]) == 0
    ours, theirs = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert json.loads((cut / "metrics.json").read_text())["history"] == report["history"]


def test_an_epoch_based_run_refuses_a_validation_interval(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 6, size=48)
    args = [*_tiny_run_args(data, tmp_path / "run"), "--set", "schedule.iterations=null"]
    assert main([*args, "--set", "schedule.epochs=1", "--set", "seg.val_interval=3"]) == 2
    assert "a validation interval of 3 iterations needs an iteration-based run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_killed_during_a_validation_repeats_it_on_resume(tmp_path, monkeypatch):
    data = write_pairs(tmp_path / "data", 6, size=48)  # 2 steps per epoch; validation 1 at step 3
    every_step = [*INTERVAL, "--set", "run.checkpoint_every=1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*_tiny_run_args(data, full), *every_step]) == 0
    evaluate = Trainer._evaluate

    def killed(self):
        raise _Stop  # the process dies while the step-3 validation runs

    monkeypatch.setattr(Trainer, "_evaluate", killed)
    with pytest.raises(_Stop):
        Trainer(
            train_cli.resolve_config(build_parser().parse_args([*_tiny_run_args(data, cut), *every_step]))
        ).fit()
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    assert main(["train", "--output", str(cut), "--resume", "--no-progress"]) == 0
    history = json.loads((full / "metrics.json").read_text())["history"]
    assert json.loads((cut / "metrics.json").read_text())["history"] == history

"""Issue 13: a Mask R-CNN run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted
run (the random flip, the anchor and RoI sampling, stochastic depth and the data order all continue)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from instance_scenes import write_scenes
from safetensors.torch import load_file
from test_resume import _assert_identical
from test_train import one_thread  # noqa: F401  (autouse: one torch thread)

from swinkit.checkpoint_io import load_torch
from swinkit.cli import build_parser, main
from swinkit.cli import train as train_cli
from swinkit.engine.trainer import Trainer

SETTINGS = {
    "task": "instance_segmentation",
    "model.preset": "mask_rcnn_swin_micro",
    "model.drop_path_rate": 0.2,
    "det.scale": "[48,48]",
    "det.hflip": 0.5,
    "run.batch_size": 2,
    "optim.accum_steps": 2,  # 10 images: 5 micro-batches, 3 steps per epoch
    "optim.lr": 1e-3,
    "schedule.epochs": 2,
    "schedule.warmup_iters": 2,
    "run.checkpoint_every": 1,
    "run.progress": False,
}


def _command(train, val, run):
    args = [sys.executable, "-m", "swinkit", "train", "--data", str(train), "--val-data", str(val)]
    args += ["--output", str(run)]
    for key, value in SETTINGS.items():
        if key != "task":
            args += ["--set", f"{key}={value}"]
    return [*args, "--task", SETTINGS["task"], "--set", "data.num_workers=1"]


def _kill_after_first_checkpoint(command, run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_detector(tmp_path):
    train = write_scenes(tmp_path / "train", 10, size=48)
    val = write_scenes(tmp_path / "val", 2, size=48, seed=1)
    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(_command(train, val, killed), killed)
    state = load_torch(killed / "checkpoints" / "last.pt")
    assert state["progress"]["epoch"] == 0 and 0 < state["progress"]["step"] < 3, "the kill lands mid-epoch"

    assert main(["train", "--output", str(killed), "--resume"]) == 0
    args = _command(train, val, tmp_path / "straight")[3:-2]  # the same command without loader workers
    Trainer(train_cli.resolve_config(build_parser().parse_args(args))).fit()  # the mmdet_1x recipe too

    a = load_torch(killed / "checkpoints" / "last.pt")
    b = load_torch(tmp_path / "straight" / "checkpoints" / "last.pt")
    for part in ("model", "optimizer", "schedule"):  # Adam moments and step counts included
        _assert_identical(a[part], b[part], part)
    assert a["progress"]["history"] == b["progress"]["history"]
    final_a = load_file(killed / "model.safetensors")
    final_b = load_file(tmp_path / "straight" / "model.safetensors")
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)

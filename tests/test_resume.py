"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file
from test_train import make_colors, one_thread  # noqa: F401  (autouse: one torch thread)

from swinkit.checkpoint_io import load_torch
from swinkit.cli import main
from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.trainer import Trainer

# Every source of randomness on: augmentation, Mixup/CutMix, stochastic depth, EMA; accumulation too.
SETTINGS = {
    "model.preset": "swinv2_micro",
    "model.image_size": 32,
    "model.drop_path_rate": 0.2,
    "data.val_split": 0.25,
    "augment.random_erasing": 0.5,
    "augment.mixup": 0.8,  # the random parts of the ImageNet recipe, so resumption covers their generators
    "augment.cutmix": 1.0,
    "augment.randaugment_ops": 2,
    "run.batch_size": 4,
    "optim.accum_steps": 2,
    "optim.lr": 1e-3,
    "schedule.epochs": 2,
    "run.ema": True,
    "run.checkpoint_every": 2,
    "run.progress": False,
}


def _command(data, run, workers):
    args = [sys.executable, "-m", "swinkit", "train", "--data", str(data), "--output", str(run)]
    for key, value in {**SETTINGS, "data.num_workers": workers}.items():
        args += ["--set", f"{key}={value}"]
    return args


def _kill_mid_epoch(data, run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(data, run, 2), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoint = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]


def _assert_identical(a: object, b: object, where: str) -> None:
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data = make_colors(tmp_path / "data", 16)  # 36 training images: 9 micro-batches, 5 steps per epoch
    killed = tmp_path / "killed"
    _kill_mid_epoch(data, killed)
    state = load_torch(killed / "checkpoints" / "last.pt")
    assert state["progress"]["step"] > 0, "the kill should land mid-epoch"
    assert not (killed / "model.safetensors").exists()

    assert main(["train", "--output", str(killed), "--resume"]) == 0  # the run's saved config, continued
    config = apply_overrides(
        TrainConfig(), {**SETTINGS, "data.train": str(data), "run.output": str(tmp_path / "straight")}
    )
    straight = Trainer(config).fit()  # no DataLoader workers: the order must not depend on them

    a = load_torch(killed / "checkpoints" / "last.pt")
    b = load_torch(tmp_path / "straight" / "checkpoints" / "last.pt")
    for part in ("model", "optimizer", "schedule", "ema"):  # optimizer moments and step counts included
        _assert_identical(a[part], b[part], part)
    final_a, final_b = (
        load_file(killed / "model.safetensors"),
        load_file(tmp_path / "straight" / "model.safetensors"),
    )
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert a["progress"]["history"] == b["progress"]["history"]
    assert json.loads((killed / "metrics.json").read_text())["accuracy"] == straight["accuracy"]

"""The same train command under torchrun (2 CPU processes, gloo, loopback) matches a single process."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train import make_colors, one_thread  # noqa: F401  (autouse: one torch thread)

from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.trainer import Trainer

SETTINGS = {
    "model.preset": "swinv2_micro",
    "model.image_size": 32,
    "model.drop_path_rate": 0.0,
    "data.crop_pct": None,
    "augment.mixup": 0.0,
    "augment.cutmix": 0.0,
    "augment.randaugment_ops": 0,
    "augment.random_erasing": 0.0,
    "optim.lr": 2e-3,
    "schedule.epochs": 2,
    "run.progress": False,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_matches_single_process(tmp_path):
    train, val = make_colors(tmp_path / "train", 16), make_colors(tmp_path / "val", 5, seed=1)
    common = {**SETTINGS, "data.train": str(train), "data.val": str(val)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "swinkit", "train",
                "--output", str(tmp_path / "ddp"), "--batch-size", "4"]  # fmt: skip
    for key, value in common.items():
        launcher += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("serve it with") == 1  # only rank 0 reports

    config = apply_overrides(
        TrainConfig(), {**common, "run.output": str(tmp_path / "single"), "run.batch_size": 8}
    )
    single = Trainer(config).fit()
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert (
        ddp["num_samples"] == single["num_samples"] == 15
    )  # every validation image, gathered from both ranks
    # 2 ranks x 4 and 1 x 8 see the same global batches: equal up to float rounding (gradient averaging order)
    assert ddp["accuracy"] == single["accuracy"]
    assert len(ddp["history"]) == len(single["history"]) == 2
    for ours, theirs in zip(ddp["history"], single["history"]):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5), (ddp, single)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5), (ddp, single)
    ddp_weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    single_weights = load_file(str(tmp_path / "single" / "model.safetensors"))
    assert ddp_weights.keys() == single_weights.keys()
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert not list((tmp_path / "ddp").glob("**/*.tmp"))


@pytest.mark.slow
def test_pretraining_under_torchrun_matches_a_single_process(tmp_path):
    """``swinkit pretrain`` on 2 processes: the SimMIM run of one process with the same total batch."""
    from test_pretrain import MICRO, make_images

    images = make_images(tmp_path / "images", 11)  # 8 training images: one batch of 4 per rank
    argv = ["pretrain", "--data", str(images), "--epochs", "2", *MICRO, "--set", "data.val_split=0.3"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "swinkit", *argv,
                "--output", str(tmp_path / "ddp")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pretrained SimMIM model") == 1  # only rank 0 reports
    single = subprocess.run(  # batch 8 on one process: the same global batches and learning rates
        [sys.executable, "-m", "swinkit", *argv, "--output", str(tmp_path / "single"), "--batch-size", "8"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    ddp, one = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("ddp", "single"))
    assert ddp["num_samples"] == one["num_samples"] == 3  # every held-out image, gathered from both ranks
    assert len(ddp["history"]) == len(one["history"]) == 2
    for ours, theirs in zip(ddp["history"], one["history"]):
        for key in ("train_loss", "masked_l1", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), (key, ddp, one)
    for epoch in (1, 2):
        assert (tmp_path / "ddp" / "plots" / f"reconstruction_epoch{epoch}.png").is_file()
    assert (tmp_path / "ddp" / "config.json").is_file() and not list((tmp_path / "ddp").glob("**/*.tmp"))

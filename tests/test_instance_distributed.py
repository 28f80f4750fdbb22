"""Mask R-CNN under torchrun (2 CPU processes, gloo, loopback): DDP steps where one rank has no positive RoI,
and ``swinkit train`` of the micro detector against one process at the same total batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from instance_scenes import write_scenes
from safetensors.torch import load_file
from test_distributed import _free_port

HERE = Path(__file__).parent


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]  # fmt: skip


def _env() -> dict[str, str]:
    src = str(HERE.parent / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, str(HERE)])}


@pytest.mark.slow
def test_ddp_steps_with_a_rank_without_positive_rois_keep_the_ranks_equal(tmp_path):
    out = tmp_path / "weights.pt"
    done = subprocess.run(_torchrun(str(HERE / "ddp_detector_steps.py"), str(out)), env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = torch.load(out)
    assert torch.equal(rank0, rank1)  # every gradient bucket was reduced on both ranks


def _train_args(train, val, run, batch):
    return ["-m", "swinkit", "train", "--task", "instance_segmentation", "--data", str(train),
            "--val-data", str(val), "--preset", "mask_rcnn_swin_micro", "--output", str(run),
            "--epochs", "2", "--batch-size", str(batch), "--lr", "1e-3", "--set", "det.scale=[64,64]",
            "--set", "schedule.warmup_iters=2", "--no-progress"]  # fmt: skip


@pytest.mark.slow
def test_swinkit_train_on_two_processes_against_one_at_the_same_total_batch(tmp_path):
    train, val = write_scenes(tmp_path / "train", 8), write_scenes(tmp_path / "val", 3, seed=1)
    ddp = subprocess.run(_torchrun(*_train_args(train, val, tmp_path / "ddp", 2)), env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("serve it with") == 1  # only rank 0 reports
    one = subprocess.run([sys.executable, *_train_args(train, val, tmp_path / "one", 4)], env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("ddp", "one"))
    assert a["num_images"] == b["num_images"] == 3  # every validation image, gathered from both ranks
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]] and len(a["history"]) == 2
    # Not bit-equal, and should not be: each rank draws its own anchor and RoI samples and normalises its
    # losses by its own sample counts (mmdet's per-GPU avg_factor). The same global batches from the same
    # weights give nearly the same first-epoch losses (measured: 5.835 against 5.811), and both runs learn.
    for key in ("train_loss", "loss_rpn_cls", "loss_cls", "loss_mask"):
        assert a["history"][0][key] == pytest.approx(b["history"][0][key], rel=0.05), key
    assert a["history"][1]["train_loss"] < a["history"][0]["train_loss"]
    ddp_weights, one_weights = (load_file(tmp_path / run / "model.safetensors") for run in ("ddp", "one"))
    assert ddp_weights.keys() == one_weights.keys()

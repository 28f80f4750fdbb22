"""Mask R-CNN under torchrun (2 CPU processes, gloo, loopback): DDP steps where one rank has no positive RoI,
and ``swinkit train`` of the micro detector against one process at the same total batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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

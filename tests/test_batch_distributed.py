"""`swinkit batch` under torchrun (2 CPU processes, gloo, loopback): shards merged equal one process's output."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from image_samples import bad_files
from PIL import Image

import swinkit
from swinkit.batch import run_batch
from swinkit.inference import Predictor
from swinkit.loading import save_pretrained


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _torchrun(model, source, out):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "swinkit", "batch",
                "--model", str(model), "--input", str(source), "--output", str(out), "--batch-size", "2",
                "--workers", "1", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=300)


def _assert_same_rows(ours, theirs):
    assert [row["image"] for row in ours] == [row["image"] for row in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert ("error" in a) == ("error" in b)
        if "probs" in b:
            assert a["labels"] == b["labels"]
            assert max(abs(x - y) for x, y in zip(a["probs"], b["probs"], strict=True)) < 1e-5


@pytest.mark.slow
def test_torchrun_shards_merge_into_the_single_process_output_and_a_killed_shard_resumes(tmp_path):
    model = tmp_path / "model"
    save_pretrained(swinkit.create_model("swin_micro", labels=["cat", "dog", "car"]), model)
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)  # sizes differ: groups per batch
        Image.fromarray(pixels).save(tmp_path / f"img_{i}.png")
    bad_files(tmp_path)
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"image_url": p.name}) + "\n" for p in sorted(tmp_path.glob("*.*g")))
    )
    single = tmp_path / "single.jsonl"
    run_batch(Predictor.from_pretrained(model, batch_size=2), tmp_path / "in.jsonl", single, num_workers=2)
    expected = _rows(single)
    assert len(expected) == 10 and sum("error" in row for row in expected) == 2

    done = _torchrun(model, tmp_path / "in.jsonl", tmp_path / "ddp.jsonl")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_rows(_rows(tmp_path / "ddp.jsonl"), expected)
    assert done.stderr.count("rows written to") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.glob("ddp.jsonl*")) == ["ddp.jsonl", "ddp.jsonl.meta.json"]

    # rank 1 of a killed run had written two rows of its share (inputs 1 and 3) and half of a third
    shard = tmp_path / "resumed.jsonl.rank1-of-2.jsonl"
    kept = [{**expected[1], "from": "killed run"}, expected[3]]
    shard.write_text("".join(json.dumps(row) + "\n" for row in kept) + '{"image": "torn')
    done = _torchrun(model, tmp_path / "in.jsonl", tmp_path / "resumed.jsonl")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = _rows(tmp_path / "resumed.jsonl")
    _assert_same_rows(resumed, expected)
    assert resumed[1]["from"] == "killed run" and "8 rows written" in done.stderr  # 2 were there
    assert not shard.exists()

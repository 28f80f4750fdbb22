"""Peak memory of ``swinkit batch`` over generated images, and its kill-and-resume guarantee at scale.

Generates N photo-sized JPEGs (default 2,000 at 640x480) and a random-init Swin-T classifier (1,000 classes),
runs ``swinkit batch`` in a subprocess, SIGKILLs it once about half the rows are written, re-runs it to
completion, and checks that every image is in the output exactly once. While each run goes, the resident
memory of the process and its DataLoader workers is sampled from /proc every 0.1 s.

Reports: peak RSS of the main process, peak summed RSS of the process tree (pages shared with the forked
workers counted once per process, so an upper bound), peak summed PSS of the tree (shared pages divided
among their sharers: the memory the job really holds), wall time and images/s. Linux only.

    python benchmarks/batch_memory.py [--images 2000] [--workers 2] [--batch-size 16] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

import swinkit
from swinkit.loading import save_pretrained

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except FileNotFoundError:
            continue
    return found


class RssSampler(threading.Thread):
    """Samples the RSS of a process and of all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.main_peak = self.tree_peak = self.tree_pss_peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree, frontier = [self.pid], [self.pid]
            while frontier:
                frontier = [c for p in frontier for c in _children(p)]
                tree += frontier
            self.main_peak = max(self.main_peak, _rss(self.pid))
            self.tree_peak = max(self.tree_peak, sum(_rss(p) for p in tree))
            self.tree_pss_peak = max(self.tree_pss_peak, sum(_pss(p) for p in tree))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def make_images(folder: Path, count: int) -> None:
    """Smooth colour fields with noise, JPEG-encoded at 640x480 (about 40 KB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(count):
        a, b, c = rng.uniform(0.005, 0.03, 3)
        base = np.stack([np.sin(a * x + i), np.cos(b * y), np.sin(c * (x + y))], axis=-1)
        pixels = (base * 100 + 128 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.jpg", quality=85)


def run(command: list[str], output: Path, kill_after_rows: int | None) -> tuple[RssSampler, float, bool]:
    """Run ``command``; SIGKILL it once ``output`` holds ``kill_after_rows`` rows. (sampler, seconds, killed)"""
    start = time.monotonic()
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    sampler = RssSampler(process.pid)
    sampler.start()
    killed = False
    while process.poll() is None:
        if kill_after_rows is not None and output.exists():
            with open(output, "rb") as f:
                if sum(1 for _ in f) >= kill_after_rows:
                    os.killpg(process.pid, signal.SIGKILL)
                    killed = True
        time.sleep(0.2)
    process.wait()
    sampler.stop()
    if not killed and process.returncode != 0:
        raise SystemExit(f"swinkit batch failed with status {process.returncode}")
    return sampler, time.monotonic() - start, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="swinkit-batch-memory-"))
    images, model, output = work / "images", work / "model", work / "out.jsonl"
    if not images.exists():
        make_images(images, args.images)
    save_pretrained(swinkit.create_model("swin_tiny_patch4_window7_224"), model)
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "swinkit", "batch", "--model", str(model), "--input", str(images)]
    command += ["--output", str(output), "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    command += ["--no-progress"]
    first, first_s, killed = run(command, output, kill_after_rows=args.images // 2)
    before = sum(1 for _ in open(output, "rb"))
    second, second_s, _ = run(command, output, kill_after_rows=None)
    counts = Counter(json.loads(line)["image"] for line in open(output, encoding="utf-8"))
    complete = len(counts) == args.images and set(counts.values()) == {1}
    mib = 1024 * 1024
    print(
        f"images: {args.images} (640x480 JPEG), model: Swin-T random init, 1000 classes, "
        f"batch {args.batch_size}, {args.workers} workers"
    )
    print(f"run 1: killed={killed} after {before} rows, {first_s:.1f} s")
    print(f"run 2: {second_s:.1f} s, {(args.images - before) / second_s:.1f} img/s (including start-up)")
    for name, sampler in (("run 1", first), ("run 2", second)):
        print(
            f"{name}: peak RSS main {sampler.main_peak / mib:.0f} MiB, process tree {sampler.tree_peak / mib:.0f} MiB"
            f" (RSS sum), {sampler.tree_pss_peak / mib:.0f} MiB (PSS sum)"
        )
    print(f"output: {len(counts)} distinct images, each exactly once: {complete}")
    if not complete:
        raise SystemExit("the resumed output is incomplete or has duplicates")


if __name__ == "__main__":
    main()

"""`swinkit batch`: streamed, resumable after a kill, every input exactly once, failures as rows."""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch
from image_samples import bad_files, photo
from PIL import Image

import swinkit
from swinkit.batch import ResumableJsonl, iter_inputs, run_batch
from swinkit.cli import main
from swinkit.inference import Predictor
from swinkit.loading import save_pretrained


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_pretrained(swinkit.create_model("swin_micro", labels=["cat", "dog", "car"]), folder)
    return folder


def _make_images(folder, count: int, size=(96, 72)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:04d}.jpg", quality=80)
    return sorted(folder.iterdir())


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _batch_command(model_dir, source, out):
    return [sys.executable, "-m", "swinkit", "batch", "--model", str(model_dir), "--input", str(source)] + [
        "--output",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "2",
        "--no-progress",
    ]


def test_killed_run_resumes_with_every_image_exactly_once(tmp_path, model_dir):
    images = _make_images(tmp_path / "in", 80, size=(160, 120))
    bad = bad_files(tmp_path / "in")
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        _batch_command(model_dir, tmp_path / "in", out), start_new_session=True, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    written_before = out.read_text().count("\n")
    assert 10 <= written_before < len(images)  # killed halfway
    with open(out, "a") as f:
        f.write('{"image": "' + str(images[-1]))  # a torn line, as a kill in the middle of a write leaves
    finished = subprocess.run(_batch_command(model_dir, tmp_path / "in", out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    rows = _rows(out)
    counts = Counter(row["image"] for row in rows)
    expected = {str(p) for p in images} | {str(p) for p in bad.values()}
    assert set(counts) == expected and set(counts.values()) == {1}
    errors = {row["image"] for row in rows if "error" in row}
    assert errors == {str(p) for p in bad.values()}
    assert all(
        row["labels"] == ["cat", "dog", "car"] and len(row["probs"]) == 3 for row in rows if "probs" in row
    )
    again = run_batch(
        Predictor.from_pretrained(model_dir), tmp_path / "in", out, num_workers=0, progress=False
    )
    assert again.written == 0 and _rows(out) == rows  # a complete output is left as it is


def test_csv_with_base64_images_and_jsonl_with_paths(tmp_path, model_dir):
    predictor = Predictor.from_pretrained(model_dir, batch_size=3)
    encoded = [base64.b64encode(photo(name).read_bytes()).decode() for name in ("chelsea.png", "rocket.jpg")]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image"])
        writer.writerows(
            [["cat", encoded[0]], ["rocket", "data:image/jpeg;base64," + encoded[1]], ["junk", "%%%"]]
        )
    summary = run_batch(predictor, tmp_path / "in.csv", tmp_path / "csv.jsonl", num_workers=0, progress=False)
    rows = {row["image"]: row for row in _rows(tmp_path / "csv.jsonl")}
    assert (summary.written, summary.errors) == (3, 1) and set(rows) == {"cat", "rocket", "junk"}
    reference = predictor.predict([photo("chelsea.png"), photo("rocket.jpg")])
    assert max(abs(a - b) for a, b in zip(rows["cat"]["probs"], reference[0].probs, strict=True)) < 1e-6
    assert max(abs(a - b) for a, b in zip(rows["rocket"]["probs"], reference[1].probs, strict=True)) < 1e-6
    assert "junk" in rows["junk"]["error"] and "base64" in rows["junk"]["error"]

    images = _make_images(tmp_path / "imgs", 3)
    lines = [json.dumps(f"imgs/{images[0].name}"), json.dumps({"path": str(images[1]), "id": "second"})]
    lines += [
        json.dumps({"path": f"imgs/{images[2].name}"}),
        json.dumps(f"imgs/{images[0].name}"),
    ]  # a repeat
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    summary = run_batch(predictor, tmp_path / "in.jsonl", tmp_path / "j.jsonl", num_workers=2, progress=False)
    ids = [row["image"] for row in _rows(tmp_path / "j.jsonl")]
    assert summary.written == 3 and sorted(ids) == sorted(
        [str(tmp_path / "imgs" / p.name) for p in (images[0], images[2])] + ["second"]
    )


def test_output_recovery_and_input_errors(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"image": "a", "probs": [1.0], "labels": ["x"]}\n{"image": "b", "pro')
    with ResumableJsonl(out) as log:
        assert "a" in log and "b" not in log
        assert log.write({"image": "b", "error": "unreadable"}) and not log.write(
            {"image": "a", "error": "again"}
        )
    assert [row["image"] for row in _rows(out)] == ["a", "b"]
    out.write_text('{"image": "a"}\nnot json\n{"image": "c"}\n')
    with pytest.raises(ValueError, match="line 2"):
        ResumableJsonl(out)
    (tmp_path / "in.csv").write_text("picture,label\nx,y\n")
    with pytest.raises(ValueError, match="'path' or an 'image'"):
        list(iter_inputs(tmp_path / "in.csv"))
    with pytest.raises(ValueError, match=r"\.jsonl or a \.csv"):
        iter_inputs(photo("chelsea.png"))


def test_spreadsheet_csv_with_mime_base64_bad_records_and_repeated_ids(tmp_path, model_dir, caplog):
    predictor = Predictor.from_pretrained(model_dir, batch_size=4)
    mime = base64.encodebytes(photo("chelsea.png").read_bytes()).decode()  # line breaks every 76 characters
    rows = [["id", "image"], ["cat", mime], ["empty", ""], ["cat", mime], ["cat2", mime.replace("+", "-")]]
    text = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows)
    (tmp_path / "in.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # "CSV UTF-8" from a spreadsheet
    summary = run_batch(predictor, tmp_path / "in.csv", tmp_path / "out.jsonl", num_workers=0, progress=False)
    out = _rows(tmp_path / "out.jsonl")
    assert [row["image"] for row in out if "probs" in row] == ["cat", "cat2"]
    assert [row for row in out if "error" in row][0]["image"].endswith("row 1")  # the empty record
    assert summary.written == 3
    assert "1 inputs repeated an id" in caplog.text


def test_a_run_where_every_input_failed_exits_non_zero(tmp_path, model_dir, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_text("not an image")
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n")
    command = ["batch", "--model", str(model_dir), "--input", str(tmp_path / "in")]
    command += ["--output", str(tmp_path / "out.jsonl"), "--workers", "0", "--no-progress"]
    assert main(command) == 1
    assert "every one of the 2 inputs failed (first: " in capsys.readouterr().err
    _make_images(tmp_path / "in", 1)
    assert main(command) == 0  # one image read: the run did something


def test_output_records_its_model_and_refuses_another_unless_overwrite(tmp_path, model_dir, capsys):
    other = tmp_path / "other"
    torch.manual_seed(123)  # the same architecture and labels, other weights
    save_pretrained(swinkit.create_model("swin_micro", labels=["cat", "dog", "car"]), other)
    images = _make_images(tmp_path / "in", 3)
    out = tmp_path / "out.jsonl"
    first = Predictor.from_pretrained(model_dir)
    run_batch(first, tmp_path / "in", out, num_workers=0, progress=False, model_name=str(model_dir))
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["model"] == str(model_dir) and len(meta["config_hash"]) == 16 and meta["fingerprint"]
    command = ["batch", "--model", str(other), "--input", str(tmp_path / "in"), "--output", str(out)]
    command += ["--workers", "0", "--no-progress"]
    assert main(command) == 2
    assert f"holds rows of model '{model_dir}'" in capsys.readouterr().err and len(_rows(out)) == 3
    assert main([*command, "--overwrite"]) == 0
    reference = Predictor.from_pretrained(other).predict([str(images[0])])[0].probs
    rows = _rows(out)
    assert len(rows) == 3 and max(abs(a - b) for a, b in zip(rows[0]["probs"], reference)) < 1e-6
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["model"] == str(other)


def test_retry_errors_rescores_error_rows_in_place_of_them(tmp_path, model_dir):
    predictor = Predictor.from_pretrained(model_dir)
    images = _make_images(tmp_path / "in", 3)
    good = images[1].read_bytes()
    images[1].write_text("not yet an image")
    out = tmp_path / "out.jsonl"
    run_batch(predictor, tmp_path / "in", out, num_workers=0, progress=False)
    assert ["error" in row for row in _rows(out)] == [False, True, False]
    images[1].write_bytes(good)
    assert run_batch(predictor, tmp_path / "in", out, num_workers=0, progress=False).written == 0
    summary = run_batch(predictor, tmp_path / "in", out, num_workers=0, progress=False, retry_errors=True)
    rows = _rows(out)
    assert (summary.written, summary.errors) == (1, 0)
    assert sorted(row["image"] for row in rows) == [str(p) for p in images]
    assert all("probs" in row for row in rows)


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        text = open(f"/proc/{pid}/task/{task}/children").read()
        found |= {int(child) for child in text.split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
def _interruptible() -> None:
    """In the child before exec: SIGINT delivered and at its default, as in a terminal. In the whole suite the
    run once got neither (all 480 rows written, exit 0): a blocked or ignored SIGINT is inherited by exec."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume_exits_130_and_stops_the_decoders(tmp_path, model_dir):
    # enough images that the run cannot finish between its 4th row and the signal (with 80, a fast run did)
    _make_images(tmp_path / "in", 480, size=(160, 120))
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        _batch_command(model_dir, tmp_path / "in", out),
        start_new_session=True,
        stderr=subprocess.PIPE,
        preexec_fn=_interruptible,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    workers = _children(process.pid)
    assert len(workers) >= 2
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, stderr = process.communicate(timeout=30)
    stopped = time.monotonic()
    rows = out.read_text().count("\n")
    assert process.returncode == 130, stderr.decode()
    message = f"interrupted: {rows} rows written to {out}; re-run the same command to resume"
    assert message in stderr.decode()
    while any(_alive(pid) for pid in workers) and time.monotonic() < stopped + 2:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    assert "Traceback" not in stderr.decode()


def test_an_output_without_a_meta_file_from_a_model_with_other_labels_is_refused(tmp_path, model_dir):
    _make_images(tmp_path / "in", 1)
    out = tmp_path / "old.jsonl"
    out.write_text(json.dumps({"image": "a.jpg", "probs": [0.5, 0.5], "labels": ["can", "carton"]}) + "\n")
    predictor = Predictor.from_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"labels \['can', 'carton'\], not of 'mine'; pass --overwrite"):
        run_batch(predictor, tmp_path / "in", out, num_workers=0, progress=False, model_name="mine")
    assert (
        run_batch(predictor, tmp_path / "in", out, num_workers=0, progress=False, overwrite=True).written == 1
    )


def test_batch_and_serve_share_the_predictors_grouping_and_azure_row(tmp_path, model_dir, monkeypatch):
    """One rule per concept: equal-size grouping is Predictor.probabilities, the row is Prediction.to_azure."""
    from swinkit.batch import predict_rows
    from swinkit.inference import Prediction
    from swinkit.serve.service import ClassificationService

    predictor = Predictor.from_pretrained(model_dir)
    calls = []
    grouping = Predictor.probabilities
    monkeypatch.setattr(
        Predictor, "probabilities", lambda self, px: calls.append(len(px)) or grouping(self, px)
    )
    azure = Prediction.to_azure
    monkeypatch.setattr(
        Prediction, "to_azure", lambda self: {**azure(self), "probs": [round(p, 3) for p in self.probs]}
    )
    pixels = [torch.rand(3, 64, 64), torch.rand(3, 64, 80), torch.rand(3, 64, 64)]
    rows = predict_rows(predictor, [("a", pixels[0], None), ("bad", None, "broken"), ("b", pixels[1], None),
                                    ("c", pixels[2], None)])  # fmt: skip
    served = ClassificationService(predictor).infer(pixels)
    assert calls == [3, 3]
    assert [r["image"] for r in rows] == ["a", "bad", "b", "c"] and rows[1] == {
        "image": "bad",
        "error": "broken",
    }
    expected = [
        Prediction.to_azure(p) for p in predictor.predict([Image.fromarray(np.zeros((4, 4, 3), np.uint8))])
    ]
    assert set(rows[0]) == {"image", *expected[0]}
    for row, result in zip([rows[0], rows[2], rows[3]], served, strict=True):
        assert row["probs"] == result.probs == [round(p, 3) for p in row["probs"]]


def test_batch_writes_through_stdout_and_fifos_without_replacing_them(tmp_path, model_dir):
    """The output rule of every writer: '-' is standard output; a FIFO stays a FIFO and gets the rows."""
    import stat
    import threading

    images = _make_images(tmp_path / "images", 3)
    command = _batch_command(model_dir, tmp_path / "images", "-")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in images)
    assert not (tmp_path / "-").exists() and not (tmp_path / "images" / "-").exists()

    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    done = subprocess.run(
        _batch_command(model_dir, tmp_path / "images", fifo), capture_output=True, timeout=300
    )
    reader.join(timeout=30)
    assert done.returncode == 0 and not reader.is_alive()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and len(received[0].splitlines()) == 3
    assert not (tmp_path / "rows.fifo.meta.json").exists()
    assert main(["batch", "--model", str(model_dir), "--input", str(tmp_path / "images"), "--output", "-",
                 "--retry-errors", "--no-progress"]) == 2  # fmt: skip


def test_overwrite_keeps_a_symlinked_output_and_starts_its_target_afresh(tmp_path, model_dir):
    images = _make_images(tmp_path / "images", 2)
    other = tmp_path / "other_model"
    save_pretrained(swinkit.create_model("swin_micro", labels=["x", "y"]), other)
    target, link = tmp_path / "t.jsonl", tmp_path / "l.jsonl"
    link.symlink_to(target)
    base = ["batch", "--input", str(tmp_path / "images"), "--output", str(link), "--no-progress"]
    assert main([*base, "--model", str(other)]) == 0
    assert main([*base, "--model", str(model_dir), "--overwrite"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    rows = _rows(target)
    assert len(rows) == len(images) and {tuple(r["labels"]) for r in rows} == {("cat", "dog", "car")}

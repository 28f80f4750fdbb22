"""`swinkit batch` resumes only with the settings its output was written with (score threshold, maximum
detections, top-k, runtime and precision), as it resumes only with the model that wrote it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from instance_scenes import FAST
from PIL import Image

import swinkit
from swinkit.batch import run_batch
from swinkit.cli import main
from swinkit.inference import Predictor
from swinkit.loading import save_pretrained
from swinkit.models.detection.checkpoints import save_pretrained as save_detector
from swinkit.models.detection.mask_rcnn import create_mask_rcnn


def _images(folder, count=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _detector_batch(tmp_path, out) -> list[str]:
    """``swinkit batch`` of a saved micro Faster R-CNN over two images into ``out`` (no workers, no bar)."""
    model = save_detector(
        create_mask_rcnn("faster_rcnn_swin_micro", labels=["a", "b"], **FAST), tmp_path / "m"
    )
    command = ["batch", "--model", str(model), "--input", str(_images(tmp_path / "in")), "--output", str(out)]
    return [*command, "--workers", "0", "--no-progress"]


def test_a_detection_batch_resumes_only_with_its_score_threshold_and_max_detections(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    command = _detector_batch(tmp_path, out)
    assert main([*command, "--score-threshold", "0.3", "--max-detections", "5"]) == 0
    settings = json.loads((tmp_path / "out.jsonl.meta.json").read_text())["settings"]
    assert settings["info"]["score_threshold"] == 0.3 and settings["info"]["max_detections"] == 5
    assert main([*command, "--score-threshold", "0.3", "--max-detections", "5"]) == 0  # same settings resume
    assert "0 rows written" in capsys.readouterr().err
    assert main([*command, "--score-threshold", "0.5", "--max-detections", "5"]) == 2
    assert "written with other settings (info.score_threshold 0.3 -> 0.5); pass" in (capsys.readouterr().err)
    assert main([*command, "--score-threshold", "0.3", "--max-detections", "7"]) == 2
    assert "info.max_detections 5 -> 7" in capsys.readouterr().err
    assert main([*command, "--score-threshold", "0.5", "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_a_detection_batch_resumes_when_the_flags_restate_the_models_own_rule(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    command = _detector_batch(tmp_path, out)
    assert main(command) == 0  # the model's own score threshold 0.05 and max_per_img 20
    assert main([*command, "--score-threshold", "0.05", "--max-detections", "20"]) == 0
    assert "0 rows written" in capsys.readouterr().err
    assert main([*command, "--max-detections", "50"]) == 0  # capped at max_per_img: the same rows
    assert "0 rows written" in capsys.readouterr().err


def test_a_classification_batch_resumes_only_with_its_top_k_runtime_and_precision(tmp_path, monkeypatch):
    folder = save_pretrained(swinkit.create_model("swin_micro", labels=["cat", "dog", "car"]), tmp_path / "m")
    source, out = _images(tmp_path / "in"), tmp_path / "out.jsonl"
    run_batch(Predictor.from_pretrained(folder, top_k=2), source, out, num_workers=0, progress=False)
    assert (
        run_batch(
            Predictor.from_pretrained(folder, top_k=2), source, out, num_workers=0, progress=False
        ).skipped
        == 2
    )
    with pytest.raises(ValueError, match=r"other settings \(top_k 2 -> 1\); pass --overwrite"):
        run_batch(Predictor.from_pretrained(folder, top_k=1), source, out, num_workers=0, progress=False)
    other = Predictor.from_pretrained(folder, top_k=2)
    info = other.info()
    monkeypatch.setattr(other, "info", lambda: {**info, "runtime": "onnxruntime", "precision": "int8"})
    with pytest.raises(
        ValueError, match=r"info.precision 'fp32' -> 'int8'; info.runtime 'torch' -> 'onnxruntime'"
    ):
        run_batch(other, source, out, num_workers=0, progress=False)


def test_an_output_recorded_before_settings_were_kept_still_resumes(tmp_path):
    folder = save_pretrained(swinkit.create_model("swin_micro", labels=["cat", "dog", "car"]), tmp_path / "m")
    source, out = _images(tmp_path / "in"), tmp_path / "out.jsonl"
    run_batch(Predictor.from_pretrained(folder), source, out, num_workers=0, progress=False)
    meta_file = tmp_path / "out.jsonl.meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["settings"]
    meta_file.write_text(json.dumps(meta))
    assert (
        run_batch(
            Predictor.from_pretrained(folder, top_k=1), source, out, num_workers=0, progress=False
        ).skipped
        == 2
    )


def test_a_segmentation_batch_resumes_whatever_its_top_k_and_threshold(tmp_path, capsys):
    from swinkit.models.segmentation import create_upernet
    from swinkit.models.segmentation.checkpoints import save_hf

    folder = tmp_path / "m"
    save_hf(create_upernet("upernet_swin_micro", labels=["sky", "road"]), folder)
    out = tmp_path / "out.jsonl"
    command = [
        "batch",
        "--model",
        str(folder),
        "--input",
        str(_images(tmp_path / "in")),
        "--output",
        str(out),
    ]
    command += ["--workers", "0", "--no-progress"]
    assert main([*command, "--top-k", "1"]) == 0
    rows = out.read_text()
    # top_k / threshold only cut the printed class lines: the rows are the same, so the output resumes
    assert main([*command, "--threshold", "0.5"]) == 0
    assert "0 rows written" in capsys.readouterr().err and out.read_text() == rows

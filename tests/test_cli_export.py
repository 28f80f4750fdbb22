"""``swinkit export``'s agreement flags reach the bounds of every task's check."""

from __future__ import annotations

from types import SimpleNamespace

from swinkit.cli import main
from swinkit.runtime import exporter
from swinkit.runtime.quantize import default_bounds


def test_detection_ap_bounds_can_be_set_on_the_command_line(monkeypatch, tmp_path):
    requests = []

    def export_model(source, destination, request):
        requests.append(request)
        return SimpleNamespace(
            format="onnx", precision="int8", graph_file="model.onnx", opset=17, agreement=None
        )

    monkeypatch.setattr(exporter, "export_model", export_model)
    argv = ["export", "det", str(tmp_path / "out"), "--format", "onnx", "--precision", "int8"]
    assert (
        main([*argv, "--calibration-data", str(tmp_path), "--min-box-ap", "0.6", "--min-mask-ap", "0.5"]) == 0
    )
    (request,) = requests
    assert request.bounds == {"bbox_AP": 0.6, "segm_AP": 0.5}
    names = {b.name for b in default_bounds("instance_segmentation")}
    assert set(request.bounds) <= names

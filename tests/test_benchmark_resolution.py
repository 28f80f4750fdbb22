"""benchmarks/resolution.py's linear fit: a fixed cost per forward is separated from the per-pixel cost."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _resolution():
    spec = importlib.util.spec_from_file_location(
        "resolution_benchmark", ROOT / "benchmarks" / "resolution.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_fit_recovers_a_fixed_cost_and_a_constant_cost_per_pixel(capsys):
    resolution = _resolution()
    fixed_ms, per_pixel_ns = 40.0, 900.0
    per_size = {s: per_pixel_ns + 1e6 * fixed_ms / s**2 for s in (224, 448, 896, 1792)}  # ns per pixel
    a, b = resolution.fit_linear(per_size)
    assert a == pytest.approx(fixed_ms, rel=1e-6) and b == pytest.approx(per_pixel_ns, rel=1e-6)
    resolution.report({"torch fp32": per_size})
    out = capsys.readouterr().out
    assert "NOT within 15%" in out  # 224^2 pays the fixed cost on few pixels: 1.8x the large sizes per pixel
    assert "fit: time = 40.0 ms + 900.0 ns x pixels" in out
    assert out.count("x1.000  (fixed cost") == 4  # the marginal cost is flat at every size

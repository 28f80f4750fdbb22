"""OpenVINO's CPU plugin and the thread's signal stack: swinkit keeps one Core for the process.

openvino 2026.4's CPU plugin maps a signal stack for the thread that creates it and unmaps it when destroyed;
two Cores destroyed in the order they were made left the thread on an unmapped signal stack, and the next
Python signal handler (here SIGCHLD, as torch's DataLoader installs) killed the process with SIGSEGV. It
crashed the whole test suite in a subprocess call long after the OpenVINO tests had finished.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")

SCRIPT = textwrap.dedent(
    """
    import gc, signal, subprocess, sys
    import numpy as np, openvino as ov, openvino.opset13 as ops, torch
    from swinkit.runtime.backends import OpenVINOBackend

    pixels = ops.parameter([-1, 3, 8, 8], np.float32)
    ov.save_model(ov.Model([ops.relu(pixels)], [pixels]), sys.argv[1])
    signal.signal(signal.SIGCHLD, lambda *args: None)  # a Python handler runs on the thread's signal stack
    first, second = OpenVINOBackend(sys.argv[1]), OpenVINOBackend(sys.argv[1], "bf16")
    pass
    assert torch.equal(first(-torch.ones(2, 3, 8, 8)), torch.zeros(2, 3, 8, 8))
    assert torch.equal(second(-torch.ones(2, 3, 8, 8)), torch.zeros(2, 3, 8, 8))
    del first
    gc.collect()
    del second
    gc.collect()
    subprocess.run(["sleep", "0.2"], check=True)  # its exit sends SIGCHLD
    print("alive")
    """
)


# what NNCF's quantization does: Cores of its own, dropped in the order they were made
OWN_CORES = textwrap.dedent(
    """
    import contextlib, gc, signal, subprocess, sys
    import numpy as np, openvino as ov, openvino.opset13 as ops
    from swinkit.runtime.openvino_core import kept_signal_stack

    signal.signal(signal.SIGCHLD, lambda *args: None)
    pixels = ops.parameter([2, 3], np.float32)
    with kept_signal_stack() if sys.argv[1] == "kept" else contextlib.nullcontext():
        cores = [ov.Core(), ov.Core()]
        for core in cores:
            core.compile_model(ov.Model([ops.relu(pixels)], [pixels]), "CPU")
        del core
        cores.pop(0)
        gc.collect()
        cores.pop(0)
        gc.collect()
    subprocess.run(["sleep", "0.2"], check=True)
    print("alive")
    """
)


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)


def test_backends_destroyed_in_creation_order_leave_signal_handlers_working(tmp_path):
    result = run(SCRIPT, str(tmp_path / "relu.xml"))
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "alive"


def test_cores_made_inside_kept_signal_stack_leave_the_threads_stack_as_it_was():
    result = run(OWN_CORES, "kept")
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "alive"
    assert run(OWN_CORES, "bare").returncode == -11  # the OpenVINO behaviour the guard is for


def test_a_signal_stack_that_cannot_be_restored_gives_a_warning_not_an_error():
    from swinkit.runtime import openvino_core

    class FailingLibc:  # sigaltstack fails, as it does for a stack that is not mapped any more
        def sigaltstack(self, new, old):
            return -1

    saved = openvino_core._SignalStack()
    with pytest.warns(RuntimeWarning, match="could not restore this thread's signal stack after OpenVINO"):
        openvino_core._restore(FailingLibc(), saved)


def test_the_restore_warning_names_the_with_statement_not_contextlib(monkeypatch):
    import ctypes

    from swinkit.runtime import openvino_core

    class MovedLibc:  # the block left another stack installed, and putting the old one back fails
        queries = 0

        def sigaltstack(self, new, old):
            if new is not None:
                return -1
            MovedLibc.queries += 1
            ctypes.cast(old, ctypes.POINTER(openvino_core._SignalStack)).contents.ss_sp = MovedLibc.queries
            return 0

    monkeypatch.setattr(openvino_core.ctypes, "CDLL", lambda *args, **kwargs: MovedLibc())
    with pytest.warns(RuntimeWarning, match="could not restore") as record:
        with openvino_core.kept_signal_stack():
            pass
    assert record[0].filename == __file__

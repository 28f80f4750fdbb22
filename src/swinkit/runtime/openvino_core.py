"""OpenVINO's Core, one per process, and the thread signal stack its CPU plugin swaps.

openvino 2026.4's CPU plugin, when a Core first uses it, maps a signal stack for the calling thread (room
for the AMX state) and installs it, remembering the previous one; when the plugin is destroyed it puts the
previous one back if its own is still installed, and unmaps its own. Two Cores destroyed in the order they
were made therefore leave the thread on the first one's stack, already unmapped, and the next Python signal
handler to run on that thread (Python installs its handlers with SA_ONSTACK: a SIGCHLD handler such as
torch's DataLoader sets, Ctrl-C) kills the process with SIGSEGV. swinkit keeps one Core for the process, so
the stack it installs is never unmapped, and runs code that makes Cores of its own (NNCF) inside
``kept_signal_stack``, which puts back the stack that was installed before.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CORE: list[Any] = []  # the process's Core, created on first use and kept until exit
_LOCK = threading.Lock()


def openvino_core() -> Any:
    """The process's one ``openvino.Core``, shared by every backend, export and quantization."""
    import openvino as ov

    with _LOCK:
        if not _CORE:
            _CORE.append(ov.Core())
        return _CORE[0]


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _signal_stack(libc: Any) -> _SignalStack | None:
    """The calling thread's signal stack, or None when ``sigaltstack`` fails."""
    stack = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the signal stack it had before (Linux; elsewhere
    a no-op): whatever Cores the block made and dropped, the thread is not left on an unmapped stack."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _signal_stack(libc)
    try:
        yield
    finally:
        if saved is not None:
            _restore(libc, saved)


def _restore(libc: Any, saved: _SignalStack) -> None:
    now = _signal_stack(libc)
    if now is not None and now.ss_sp == saved.ss_sp:
        return
    if libc.sigaltstack(ctypes.byref(saved), None) != 0:  # a warning: the block's own error must surface
        error = ctypes.get_errno()
        warnings.warn(
            f"could not restore this thread's signal stack after OpenVINO ({os.strerror(error)}): "
            "a later signal may crash the process",
            RuntimeWarning,
            stacklevel=4,  # _restore, kept_signal_stack, contextlib, the with statement
        )

"""Ctrl-C and SIGTERM while a command runs: remembered even when the KeyboardInterrupt they
raise is swallowed, so that the command still stops and writes no result."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "check_interrupted"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler preempting the job, torchrun stopping its workers): the
    command stops as after Ctrl-C, with status 143."""


_interrupted = threading.Event()
_terminated = threading.Event()


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived during :func:`run_command`, even when the
    first KeyboardInterrupt was swallowed (Python only prints one raised in a finaliser, and
    some libraries catch it)."""
    if _terminated.is_set():
        raise Terminated
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def remember_interrupts() -> Iterator[None]:
    _interrupted.clear()
    _terminated.clear()
    # Outside the main thread no handler can be installed; a process started with a signal
    # ignored (SIGINT in a background job, nohup) keeps ignoring it, as Python itself does.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        _interrupted.set()
        raise KeyboardInterrupt

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _interrupted.set()
        _terminated.set()
        raise Terminated

    previous: dict[signal.Signals, Any] = {}
    for number, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm)):
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _interrupted.clear()
        _terminated.clear()

"""The command lines' error boundary: one line on stderr and a documented exit status.

Every command of the toolkit (``analysis.audit``, ``analysis.gate``, ``checkpoints.inspect``)
runs its body through :func:`run_command`:

- 0 success; 1 only "the gate failed" (returned by the body itself, never for an error);
- 2 bad input: a wrong file, flag or value, found before any work wherever it can be; one
  line naming the culprit, what was expected, what arrived and the fix;
- 3 an internal error: something the toolkit did not anticipate went wrong; one line with the
  exception, and the traceback with ``--verbose``;
- 4 (``checkpoints.inspect`` only) the file was described, but something is missing to load
  it as described;
- 130 interrupted (Ctrl-C): one line; results are written atomically, so nothing half-written
  is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

__all__ = [
    "EXIT_GATE_FAILED",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_WOULD_NOT_LOAD",
    "TEMPORARY_NAME",
    "Terminated",
    "InputError",
    "OneLineParser",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_interrupted",
    "check_writable",
    "one_line",
    "remove_stale_temporaries",
    "run_command",
]

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3
# checkpoints.inspect only: the file was described, but would not load as described.
EXIT_WOULD_NOT_LOAD = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM killed


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler preempting the job, torchrun stopping its workers): the
    command stops as after Ctrl-C, with status 143."""


class InputError(ValueError):
    """Bad input from the user (a file, a flag, a value): exit status 2, one line."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (newlines and runs of blanks collapsed)."""
    text = (
        str(error) if not isinstance(error, KeyError) else str(error.args[0] if error.args else "")
    )
    text = " ".join(text.split())
    if isinstance(error, BaseException) and not text:
        text = type(error).__name__
    return text


def check_writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """Raise :class:`InputError` when ``path`` could not be written later, creating nothing.

    Args:
        path: a file to be written, or with ``folder`` a folder to be created or written into.
        flag: the flag it came from, for the message.
        folder: ``path`` is a folder.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, expected a folder (or a path to create)")
    if not folder and path.is_dir():
        raise InputError(f"{flag} {path} is a folder, expected a file path to write")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path} exists and is not writable; choose another path")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(
            f"{flag} {path} cannot be created: {ancestor} is a file, not a folder; choose "
            "another path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(
            f"{flag} {path} cannot be written: {ancestor} is not writable; choose another path"
        )


def run_command(
    body: Callable[[], int],
    *,
    verbose: bool,
    input_errors: tuple[type[BaseException], ...] = (InputError,),
) -> int:
    """Run ``body`` and turn whatever escapes it into one line and an exit status.

    Args:
        body: the command; returns its own status (0, or 1 for a failed gate).
        verbose: print the traceback of an error before its line.
        input_errors: exception types that mean bad input (status 2). ``OSError`` (a path that
            cannot be read or written) always counts as bad input.

    Returns:
        The exit status.
    """
    expected: tuple[type[BaseException], ...] = (*input_errors, OSError)
    try:
        with _remember_interrupts():
            status = body()
            # A KeyboardInterrupt raised inside a finaliser or a library's broad handler is
            # swallowed; the signal still counts.
            check_interrupted()
            return status
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        who = "by SIGTERM" if terminated else "by the user"
        print(f"interrupted: stopped {who}; no partial result was written", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except expected as err:
        if verbose:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as err:  # noqa: BLE001 - the boundary: nothing may escape as a traceback
        if verbose:
            traceback.print_exc()
        print(
            f"internal error: {type(err).__name__}: {one_line(err)} (rerun with --verbose for "
            "the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


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
def _remember_interrupts() -> Iterator[None]:
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


TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""The name of the temporary file :func:`atomic_write_bytes` writes before its rename:
``.<name>.<8 random characters>.tmp`` beside the target (``tempfile.mkstemp``'s random part).
A process killed between the two (SIGKILL, a power cut) leaves one behind; whoever owns the
folder may remove it with :func:`remove_stale_temporaries`."""

_ATTEMPTS = 3


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader never
    sees a partial file and a failure leaves none.

    The temporary file is locked (``flock``) while it is written, so that
    :func:`remove_stale_temporaries` removes only those whose writer is gone. A temporary file
    removed in the instant between its creation and its lock is written again.
    """
    for attempt in range(_ATTEMPTS):
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)
                mask = os.umask(0)
                os.umask(mask)
                os.fchmod(out.fileno(), 0o666 & ~mask)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
                check_interrupted()  # an interrupted command leaves no result, even a whole one
                try:
                    os.replace(temp, path)  # under the lock: never taken for a stale file
                    return
                except FileNotFoundError:
                    if attempt + 1 == _ATTEMPTS or not path.parent.is_dir():
                        raise
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write_bytes` in ``folder`` (not below it)
    whose writer is gone, and return them.

    A temporary file is taken as stale only when its name is one
    :func:`atomic_write_bytes` gives (``TEMPORARY_NAME``) and no process holds its lock: one
    being written is left alone. Call it only on a folder this process owns (the audit holds
    the folder's lock, ``analysis.resume.FolderLock``).
    """
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return removed
    for path in entries:
        if not TEMPORARY_NAME.fullmatch(path.name):
            continue
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile (renamed by its writer), or not a plain file
            continue
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive and still writing it
            try:
                path.unlink()
            except OSError:  # renamed by its writer meanwhile, or not ours to remove
                continue
            removed.append(path)
        finally:
            os.close(handle)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))

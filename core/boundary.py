"""The command lines' error boundary: one line on stderr and a documented exit status.

Every command of the toolkit (``commands.audit``, ``commands.gate``, ``commands.inspect``,
``commands.report``, ``commands.compare``) runs its body through :func:`run_command`:

- 0 success; 1 only "the gate failed" (returned by the body itself, never for an error);
- 2 bad input: a wrong file, flag or value, found before any work wherever it can be; one
  line naming the culprit, what was expected, what arrived and the fix;
- 3 an internal error: something the toolkit did not anticipate went wrong; one line with the
  exception, and the traceback with ``--verbose``;
- 4 (``checkpoints.inspect`` only) the file was described, but something is missing to load
  it as described;
- 130 interrupted (Ctrl-C): one line; results are written atomically, so nothing half-written
  is left behind.

Every file a command reads goes through :func:`open_input` (or :func:`read_input`,
:func:`load_json`, :func:`load_toml`, which use it): it must be a regular file (a FIFO, a
device or a socket is refused before it is opened for reading, so nothing blocks or reads
forever) no larger than the limit of its kind, and a JSON or TOML text may nest no deeper than
its kind allows, checked before the parser (which recurses) sees it. The limits are declared
once, in ``INPUT_LIMITS``, each with its reason. Every path a command writes is checked by
:func:`check_writable` (a probe file created and removed in the folder) before any work, and
an error while writing becomes one line naming the path, the flag and the fix
(:func:`writing`).

This module holds the exit statuses, the argument parser and :func:`run_command`; the rest
are its parts: ``core.errors`` (bad input, and an error's message on one line),
``core.interrupts`` (Ctrl-C and SIGTERM), ``core.inputs`` (bounded input) and
``core.outputs`` (checked and atomic writes).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from core.errors import InputError, error_line, one_line
from core.inputs import (
    DEFLATE_MAX_RATIO,
    INPUT_LIMITS,
    InputLimit,
    check_archive,
    load_json,
    load_toml,
    open_input,
    read_input,
    size_text,
)
from core.interrupts import Terminated, check_interrupted, remember_interrupts
from core.outputs import (
    TEMPORARY_NAME,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    output_error,
    remove_stale_temporaries,
    writing,
)

__all__ = [
    "DEFLATE_MAX_RATIO",
    "EXIT_GATE_FAILED",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_WOULD_NOT_LOAD",
    "INPUT_LIMITS",
    "TEMPORARY_NAME",
    "Terminated",
    "InputError",
    "InputLimit",
    "OneLineParser",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_archive",
    "check_interrupted",
    "check_writable",
    "error_line",
    "load_json",
    "load_toml",
    "one_line",
    "open_input",
    "output_error",
    "read_input",
    "remove_stale_temporaries",
    "run_command",
    "size_text",
    "writing",
]

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3
# checkpoints.inspect only: the file was described, but would not load as described.
EXIT_WOULD_NOT_LOAD = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM killed


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ...``) and exit status 2.

    Flags are never abbreviated: ``--no-flatnes`` is an error, not ``--no-flatness`` (a typo
    silently taken for another flag would run another audit than the one asked for)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


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
        with remember_interrupts():
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

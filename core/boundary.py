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
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import itertools
import json
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import tomllib
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

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


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler preempting the job, torchrun stopping its workers): the
    command stops as after Ctrl-C, with status 143."""


class InputError(ValueError):
    """Bad input from the user (a file, a flag, a value): exit status 2, one line."""


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


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (newlines and runs of blanks collapsed)."""
    text = (
        str(error) if not isinstance(error, KeyError) else str(error.args[0] if error.args else "")
    )
    text = " ".join(text.split())
    if isinstance(error, BaseException) and not text:
        text = type(error).__name__
    return text


_TORCHSCRIPT_PREAMBLE = "The following operation failed in the TorchScript interpreter."


def error_line(message: BaseException | str) -> str:
    """The one line of an error's message that says what failed, for a warning or a finding.

    That is its first non-empty line (a library's message goes on with details, hints or a
    traceback), with one exception: an error raised inside TorchScript's interpreter begins
    with a line saying only that, then its own traceback, and ends with the original error
    (``builtins.RuntimeError: ...``), which is taken instead. A ``Type: `` prefix before the
    preamble (as ``attacks.suite`` records errors) is dropped with it. Blanks collapse as in
    :func:`one_line`.
    """
    text = str(message) if not isinstance(message, KeyError) else one_line(message)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return one_line(message)
    line = lines[0]
    if _TORCHSCRIPT_PREAMBLE in line and len(lines) > 1:
        line = lines[-1].strip().removeprefix("builtins.")
    return one_line(line)


# ---------------------------------------------------------------------------- bounded input

_KIB = 1 << 10
_MIB = 1 << 20
_GIB = 1 << 30


@dataclass(frozen=True)
class InputLimit:
    """What the toolkit reads of one kind of file, at most, and why.

    Attributes:
        what: the kind, as messages name it (``"suite file"``).
        expected: what to give instead, as messages say it (``"a suite .toml file"``).
        max_bytes: the largest file of this kind that is read.
        reason: why no real file of this kind is larger.
        max_depth: for JSON and TOML, the deepest nesting of arrays and tables (the top level
            counts 1), or None.
        depth_reason: why no real file of this kind nests deeper.
        fix: what to do about a syntax error.
    """

    what: str
    expected: str
    max_bytes: int
    reason: str
    max_depth: int | None = None
    depth_reason: str = ""
    fix: str = "check that it is the right file"


INPUT_LIMITS: dict[str, InputLimit] = {
    "suite": InputLimit(
        "suite file",
        "a suite .toml file",
        1 * _MIB,
        "a suite lists a few attacks; the thorough preset written out is 1.1 KB",
        max_depth=16,
        depth_reason="a suite nests 3 deep: [[attacks]] tables and [epsilons] lists",
        fix="fix its syntax (see README, suite files)",
    ),
    "description": InputLimit(
        "description file",
        "a description .toml or .json file",
        1 * _MIB,
        "a description is a dozen keys, under 1 KB",
        max_depth=16,
        depth_reason="a description nests 3 deep: [layer] with its params and positions",
        fix="fix its syntax (see README)",
    ),
    "result": InputLimit(
        "result file",
        "an audit.json file",
        512 * _MIB,
        "a result holds about 11 bytes per sample for each attack, epsilon and norm, 0.35 KB "
        "per sample with the standard preset; 512 MiB holds over 90,000 samples of ten "
        "attacks at 25 epsilons under two norms",
        max_depth=32,
        depth_reason="a result document nests 9 deep",
        fix="give the audit.json an audit wrote",
    ),
    "manifest": InputLimit(
        "zoo manifest",
        "the zoo's manifest.json",
        1 * _MIB,
        "the manifest holds one short entry per zoo checkpoint, about 7 KB for the zoo",
        max_depth=16,
        depth_reason="the manifest nests 4 deep",
    ),
    "checkpoint": InputLimit(
        "checkpoint",
        "a checkpoint file written by torch.save",
        16 * _GIB,
        "torch.load holds the whole file in memory; a 300-million-parameter model's float32 "
        "weights with Adam's two moment estimates (a Lightning .ckpt) are 3.6 GB, and this "
        "toolkit's largest architecture, the NormOut code's VGG-16, is 540 MB",
    ),
    "dataset": InputLimit(
        "dataset file",
        "a dataset file (.npz, .pt, IDX or a CIFAR-10 batch)",
        4 * _GIB,
        "a dataset is held in memory whole, and again as float32 (four times a uint8 file); "
        "CIFAR-10's 50,000 training images are 150 MB as uint8",
    ),
}
"""Every kind of file the toolkit reads, with its limits and the reason for each.

Results the toolkit writes, the files a user passes and the datasets it evaluates on stay far
below them; a file beyond them is not a file of that kind (``/dev/zero``, a wrong path, a
crafted file), and reading it would take memory or time without end before any check could
refuse it.
"""

# DEFLATE, the compression of gzip and zip, expands a byte to at most 1032 bytes; a member
# that claims more than this per compressed byte cannot be what it says.
DEFLATE_MAX_RATIO = 1032

_FILE_TYPES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe), which would be read until its writer stops"),
    (stat.S_ISCHR, "a character device, which may never end"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _limit(kind: InputLimit | str) -> InputLimit:
    return INPUT_LIMITS[kind] if isinstance(kind, str) else kind


def size_text(count: float) -> str:
    """A byte count for people: ``512 MiB``, ``3.2 GiB``, ``812 bytes``."""
    for unit, size in (("GiB", _GIB), ("MiB", _MIB), ("KiB", _KIB)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def _check_mode(
    path: Path, mode: int, limit: InputLimit, error: Callable[[str], Exception]
) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((text for test, text in _FILE_TYPES if test(mode)), "not a file")
    if stat.S_ISDIR(mode):
        raise error(f"{limit.what} {path} is a folder; give {limit.expected}")
    raise error(
        f"{limit.what} {path} is not a regular file but {kind}; give {limit.expected} (copy a "
        "stream into a file first)"
    )


def _check_size(
    path: Path, size: int, limit: InputLimit, error: Callable[[str], Exception]
) -> None:
    if size > limit.max_bytes:
        raise error(
            f"{limit.what} {path} holds {size_text(size)}, more than a {limit.what} can: at most "
            f"{size_text(limit.max_bytes)} ({limit.reason}); check that it is the right file"
        )


def open_input(
    path: str | Path,
    kind: InputLimit | str,
    error: Callable[[str], Exception] = InputError,
) -> IO[bytes]:
    """Open a file the toolkit reads, once it is known to be a regular file within its limit.

    The path is checked before it is opened (a FIFO or a device is never opened) and the open
    descriptor again (the path may have changed in between); a FIFO is opened without
    blocking.

    Args:
        path: the file.
        kind: a key of ``INPUT_LIMITS`` or an :class:`InputLimit`.
        error: the exception type (one line) for a file that cannot be read.

    Returns:
        The file, open for reading in binary mode; the caller closes it.

    Raises:
        ``error``: missing, a folder, not a regular file, unreadable or too large.
    """
    path, limit = Path(path), _limit(kind)
    try:
        _check_mode(path, os.stat(path).st_mode, limit, error)
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{limit.what} {path} does not exist") from None
    except OSError as err:
        raise error(
            f"{limit.what} {path} cannot be read ({err.strerror or err}); check the path and its "
            "permissions"
        ) from None
    try:
        info = os.fstat(handle)
        _check_mode(path, info.st_mode, limit, error)
        _check_size(path, info.st_size, limit, error)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def read_input(
    path: str | Path, kind: InputLimit | str, error: Callable[[str], Exception] = InputError
) -> bytes:
    """The bytes of a file checked by :func:`open_input`, never more than its limit (a file that
    grows while it is read is refused as well)."""
    limit = _limit(kind)
    with open_input(path, limit, error) as handle:
        try:
            data = handle.read(limit.max_bytes + 1)
        except OSError as err:
            raise error(
                f"{limit.what} {path} cannot be read ({err.strerror or err}); check the path"
            ) from None
    _check_size(Path(path), len(data), limit, error)
    return data


def _text(path: Path, data: bytes, limit: InputLimit, error: Callable[[str], Exception]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{limit.what} {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
            f"give {limit.expected} saved as UTF-8"
        ) from None


# Strings and comments are skipped before brackets are counted: JSON strings; TOML's
# multi-line basic and literal strings (up to two quotes may stand before the closing three),
# single-line basic and literal strings, and comments. Each pattern has exactly one way to
# match a given text, so none backtracks.
_JSON_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOML_SKIPPED = re.compile(
    rb'"""(?:[^"\\]|\\.|"(?!""))*"{3,5}'
    rb"|'''(?:[^']|'(?!''))*'{3,5}"
    rb'|"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
    rb"|'[^'\n]*'"
    rb"|#[^\n]*",
    re.DOTALL,
)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
# A dotted key (``a.b."c"``, in a header too) once strings are replaced by a bare-key letter.
_DOTTED_KEY = re.compile(rb"[A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _bracket_depth(data: bytes, skipped: re.Pattern[bytes]) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings and comments, as a parser that
    recurses per bracket would reach it before it fails (a text whose strings do not close
    fails where they stop being strings, and its brackets up to there are counted)."""
    brackets = _NOT_BRACKETS.sub(b"", skipped.sub(b" ", data))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _key_parts(data: bytes) -> int:
    """The most parts of a TOML dotted key (1 without dots), strings and comments aside:
    ``tomllib`` builds the prefixes of a dotted key, so a key of many parts takes time and
    memory that grow with the square of its length before any table could be checked."""
    keys = _TOML_SKIPPED.sub(b"s", data)
    return 1 + max((match.group().count(b".") for match in _DOTTED_KEY.finditer(keys)), default=0)


def _structure_depth(value: Any) -> int:
    """How deep dicts and lists nest in ``value`` (the top counts 1), without recursing."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in item)
    return deepest


def _too_deep(path: Path, depth: int, limit: InputLimit) -> str:
    return (
        f"{limit.what} {path} nests arrays and tables {depth} deep, too deeply for a "
        f"{limit.what}: at most {limit.max_depth} ({limit.depth_reason}); check that it is the "
        "right file"
    )


def load_json(
    path: str | Path,
    kind: InputLimit | str,
    error: Callable[[str], Exception] = InputError,
    **options: Any,
) -> Any:
    """Read and parse a JSON file within its kind's limits (size, then nesting depth, checked
    before ``json`` recurses into it).

    Args:
        path: the file.
        kind: a key of ``INPUT_LIMITS`` or an :class:`InputLimit` with a ``max_depth``.
        error: the exception type (one line).
        options: passed to ``json.loads`` (e.g. ``parse_constant``); a ``ValueError`` that one
            of them raises is reported like a syntax error.

    Raises:
        ``error``: as :func:`open_input`, not UTF-8, nested too deeply, or not valid JSON.
    """
    path, limit = Path(path), _limit(kind)
    data = read_input(path, limit, error)
    depth = _bracket_depth(data, _JSON_STRINGS)
    if limit.max_depth is not None and depth > limit.max_depth:
        raise error(_too_deep(path, depth, limit))
    text = _text(path, data, limit, error)
    del data
    try:
        return json.loads(text, **options)
    except RecursionError:  # only past the depth limit, which the scan above refuses
        raise error(_too_deep(path, depth, limit)) from None
    except ValueError as err:
        raise error(
            f"{limit.what} {path} is not valid JSON: {one_line(err)}; {limit.fix}"
        ) from None


def load_toml(
    path: str | Path, kind: InputLimit | str, error: Callable[[str], Exception] = InputError
) -> dict[str, Any]:
    """Read and parse a TOML file within its kind's limits: size; then, before ``tomllib`` sees
    it, the nesting of arrays and inline tables (which it recurses into) and the parts of a
    dotted key (whose prefixes it builds, in time and memory that grow with the square of the
    key's length); and the nesting of tables once parsed (headers and keys add up).

    Raises:
        ``error``: as :func:`open_input`, not UTF-8, nested too deeply, or not valid TOML.
    """
    path, limit = Path(path), _limit(kind)
    data = read_input(path, limit, error)
    stop = limit.max_depth if limit.max_depth is not None else sys.maxsize
    depth = _bracket_depth(data, _TOML_SKIPPED)
    if depth > stop:
        raise error(_too_deep(path, depth, limit))
    parts = _key_parts(data)
    if parts > stop:
        raise error(
            f"{limit.what} {path} has a dotted key of {parts} parts, which nests tables too "
            f"deeply for a {limit.what}: at most {limit.max_depth} ({limit.depth_reason}); check "
            "that it is the right file"
        )
    text = _text(path, data, limit, error)
    try:
        parsed = tomllib.loads(text)
    except RecursionError:
        raise error(_too_deep(path, depth, limit)) from None
    except tomllib.TOMLDecodeError as err:
        raise error(
            f"{limit.what} {path} is not valid TOML: {one_line(err)}; {limit.fix}"
        ) from None
    depth = _structure_depth(parsed)
    if depth > stop:
        raise error(_too_deep(path, depth, limit))
    return parsed


def check_archive(
    handle: IO[bytes],
    path: str | Path,
    kind: InputLimit | str,
    error: Callable[[str], Exception] = InputError,
) -> list[zipfile.ZipInfo] | None:
    """For a zip archive (a torch.save checkpoint, an .npz), check that what its members
    declare fits the kind's limit and what the file can hold, before any is inflated.

    Args:
        handle: the file, open (from :func:`open_input`); its position is restored.
        path: its path, for messages.
        kind: a key of ``INPUT_LIMITS`` or an :class:`InputLimit`.
        error: the exception type (one line).

    Returns:
        The members, or None when the file is not a readable zip archive (its reader then
        judges it).

    Raises:
        ``error``: a member declares more than the limit, or more than its compressed bytes
            can hold.
    """
    path, limit = Path(path), _limit(kind)
    position = handle.tell()
    try:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None
    finally:
        handle.seek(position)
    total = 0
    for member in members:
        total += member.file_size
        stored = member.compress_type == zipfile.ZIP_STORED
        most = member.compress_size if stored else member.compress_size * DEFLATE_MAX_RATIO
        if member.file_size > most + _KIB:
            raise error(
                f"{limit.what} {path}: member {member.filename!r} declares "
                f"{size_text(member.file_size)} but holds {size_text(member.compress_size)} "
                f"compressed, which cannot inflate to more than {size_text(most)}; the file is "
                "damaged or crafted"
            )
    if total > limit.max_bytes:
        raise error(
            f"{limit.what} {path} declares {size_text(total)} of members, more than a "
            f"{limit.what} can: at most {size_text(limit.max_bytes)} ({limit.reason}); check "
            "that it is the right file"
        )
    return members


def check_writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """Raise :class:`InputError` when ``path`` could not be written later, leaving nothing.

    Permissions alone do not say it (root passes every permission check, yet cannot write into
    ``/proc``, ``/sys``, a read-only file system or an immutable folder): a probe file is
    created and removed in the deepest folder that exists, the one the run would write into or
    create its folders in. An existing file must be a regular file that can be opened for
    writing (it is replaced, never written into).

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
    if not folder and (path.exists() or path.is_symlink()):
        mode = os.stat(path).st_mode if path.exists() else 0
        if not stat.S_ISREG(mode):
            kind = next((text.split(",")[0] for test, text in _FILE_TYPES if test(mode)), "")
            raise InputError(
                f"{flag} {path} exists and is {kind or 'a broken link'}, not a regular file; "
                "give a file path to write"
            )
        try:
            os.close(os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0)))
        except OSError as err:
            raise output_error(path, flag, err) from None
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(
            f"{flag} {path} cannot be created: {ancestor} is a file, not a folder; choose "
            "another path"
        )
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=".robaudit-probe-")
    except OSError as err:
        raise output_error(path, flag, err, folder=ancestor) from None
    os.close(handle)
    os.unlink(probe)


_OUTPUT_FIXES = {
    errno.ENOSPC: "free space on that disk, or choose a folder on another disk",
    errno.EDQUOT: "free space within your quota, or choose a folder on another disk",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f): raise that "
    "limit, or choose another path",
    errno.EROFS: "choose a folder on a writable file system",
    errno.EACCES: "choose a path you can write",
    errno.EPERM: "the file or folder is immutable, or the file system refuses it: choose a "
    "path you can write",
    errno.ENOENT: "the folder takes no new files (a special file system such as /proc, or a "
    "folder removed meanwhile): choose another path",
}


def output_error(path: Path, flag: str, err: OSError, *, folder: Path | None = None) -> InputError:
    """One line for an OS error while writing ``path`` (from ``flag``): the path, the flag,
    what the system said and the fix."""
    where = f" in {folder}" if folder is not None and folder != path else ""
    fix = _OUTPUT_FIXES.get(err.errno or 0, "choose another path")
    reason = err.strerror or one_line(err)
    return InputError(f"{flag} {path} cannot be written{where}: {reason}; {fix}")


@contextlib.contextmanager
def writing(path: Path, flag: str) -> Iterator[None]:
    """Turn an OS error while writing ``path`` (a full disk, a folder that vanished, a
    read-only file system) into one line naming the path, the flag and the fix (exit
    status 2). The writes themselves are atomic, so nothing half-written is left."""
    try:
        yield
    except OSError as err:
        raise output_error(Path(path), flag, err) from None


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

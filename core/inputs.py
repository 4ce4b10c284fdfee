"""Bounded input: every file the toolkit reads is a regular file within the limit of its kind.

A FIFO, a device or a socket is refused before it is opened for reading, so nothing blocks or
reads forever; a file larger than its kind's limit is refused before it is read; a JSON or TOML
text may nest no deeper than its kind allows, checked before the parser (which recurses) sees
it; and the members of a zip archive may declare no more than the file can hold. The limits are
declared once, in ``INPUT_LIMITS``, each with its reason.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import sys
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.errors import InputError, one_line

__all__ = [
    "DEFLATE_MAX_RATIO",
    "INPUT_LIMITS",
    "InputLimit",
    "check_archive",
    "load_json",
    "load_toml",
    "open_input",
    "read_input",
    "size_text",
]

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

FILE_TYPES = (
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
    kind = next((text for test, text in FILE_TYPES if test(mode)), "not a file")
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

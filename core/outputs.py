"""What a command writes: paths checked before any work, OS errors as one line, and files
written atomically (a reader never sees a partial file, and a failure leaves none)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import InputError, one_line
from core.inputs import FILE_TYPES
from core.interrupts import check_interrupted

__all__ = [
    "TEMPORARY_NAME",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "output_error",
    "remove_stale_temporaries",
    "writing",
]


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
            kind = next((text.split(",")[0] for test, text in FILE_TYPES if test(mode)), "")
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

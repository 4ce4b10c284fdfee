"""Finished units of an audit kept on disk, so that an interrupted audit resumes.

A unit is one piece of an audit's work whose value is kept whole under its name and computed
only when it is not kept already. In the order the audit runs them:

- ``batch-attacks``: the chunk size the attacks evaluate the model in (``analysis.batching``);
- ``probes``: the probes (``analysis.probes``);
- each stage of the attack suite but the clean pass, in its plan's order, named by
  ``attacks.plan`` (``Stage.unit``): ``<norm>-<attack>-eps=<epsilon>`` (one attack at one
  norm and epsilon), ``<norm>-sweep-<attack>`` and ``<norm>-independent-sweep-<attack>`` (a
  norm's sweep and independent sweep);
- ``batch-flatness``: the batch size of the flatness estimators;
- ``flatness-<mode>-<measure>-batch=<size>``: one flatness estimator in one mode at the batch
  size it ran at (``analysis.batching.FlatnessUnit``, over ``flatness.Unit``);
- ``conventions``: the trials of other input conventions (``analysis.conventions``).

Every unit goes through one memo, `UnitCache.memo` (a ``torchutil.Memo``: ``memo(key,
compute) -> (value, loaded)``), keyed by the unit's name above: the attack suite's memo
by a stage's name, ``flatness.measure``'s by its ``flatness.Unit``, which
``analysis.batching`` turns into a ``FlatnessUnit`` and the pipeline into its name. Each
unit is written, once finished, to ``OUT/<name>/.partial/<unit>.pt`` through a temporary
file and a rename. The same command run again loads the finished units instead of
computing them; every random draw is still made in the same order (a unit's generator is
drawn from its parent whether the unit is computed or loaded), so the document equals that
of an uninterrupted run apart from timings.

The folder is keyed: ``key.json`` holds a SHA-256 (`cache_key`) over the identity
`audit_identity` gives: the checkpoint's and its weights' hashes, where the model came
from and its description, the evaluation set (dataset, source, indices, labels, a hash of the
images), the whole configuration, the device type, the versions of the project and torch,
and a hash of the project's own source (`source_sha256`: a working copy keeps its version
number from one change to the next). A run whose key differs discards the folder and starts
afresh, so changed inputs never mix with old results; ``--fresh`` discards it in any case.
The folder is removed once the document is written.

An OS error while writing the folder (a full disk, a quota) stops the audit with one line
naming the file, the flag the folder came from and the fix (status 2), as an error while
writing the document does: the document goes to the same disk, so an audit that went on
without keeping its units would most likely fail there too, after all its work. The units
already finished stay, and the same command resumes from them once the cause is fixed.

Each unit file carries its own name, the key it was made under and the SHA-256 of its value
(a one-line JSON header before the value): a unit made under another key (copied from another
audit's folder), damaged, or not written by this module is recomputed, with one line on
stderr, and never read further.

Loading runs no code from the file: units are read with ``torch.load(weights_only=True)``,
which rebuilds only tensors, plain containers and the result types listed in ``SAFE_TYPES``
(dataclasses and enums of the project, constructed without calling any of their methods).

One audit at a time owns ``OUT/<name>/``: :class:`FolderLock` holds an ``flock`` on
``OUT/<name>/.audit.lock`` for the whole audit of that checkpoint (the operating system
releases it when the process ends, however it ends). A second audit into the same place is
refused (:class:`FolderBusy`), so it never discards or removes the first one's units; the
owner removes the temporary files a killed run left behind.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from tqdm import tqdm

from core.boundary import (
    InputError,
    atomic_write_bytes,
    one_line,
    output_error,
    remove_stale_temporaries,
)
from core.document import SCHEMA_VERSION
from torchutil import Memo, distributed, to_device

if TYPE_CHECKING:
    from analysis.config import AuditConfig
    from analysis.pipeline import EvaluationSet
    from checkpoints import LoadedCheckpoint

__all__ = [
    "LOCK",
    "PARTIAL",
    "SAFE_TYPES",
    "SOURCE_PACKAGES",
    "SOURCE_ROOT",
    "FolderBusy",
    "FolderLock",
    "UnitCache",
    "audit_identity",
    "cache_key",
    "source_sha256",
]

PARTIAL = ".partial"
"""The folder beside ``audit.json`` that holds the finished units."""

LOCK = ".audit.lock"
"""The file beside ``audit.json`` that the running audit of that folder holds locked."""

_MAGIC = b"robaudit-unit 1\n"
"""The first line of a unit file; the second is its JSON header, the rest its value."""

T = TypeVar("T")


def _types(modules: Iterable[ModuleType]) -> list[type]:
    """The dataclasses and enums defined in ``modules``."""
    out = []
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and (dataclasses.is_dataclass(value) or issubclass(value, enum.Enum))
            ):
                out.append(value)
    return out


def _safe_types() -> list[type]:
    from analysis import conventions
    from attacks import result, threat
    from core import attackrecords, document, flatrecords

    modules = (
        document,
        attackrecords,
        flatrecords,
        result,
        threat,
        conventions,
    )
    return _types(modules)


SAFE_TYPES: tuple[type, ...] = tuple(_safe_types())
"""The types a unit file may hold besides tensors and plain containers."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(identity: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``identity`` as canonical JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def audit_identity(
    loaded: LoadedCheckpoint,
    evaluation: EvaluationSet,
    config: AuditConfig,
    device: torch.device,
) -> dict[str, Any]:
    """What an audit's finished units were computed from (see the module's docstring), the
    identity `UnitCache` hashes into its key: a unit is reused only when all of it is the
    same."""
    # Imported here: the pipeline imports this module for its cache.
    from analysis.pipeline import package_versions

    return {
        "schema_version": SCHEMA_VERSION,
        "checkpoint_sha256": loaded.sha256,
        "weights_sha256": loaded.weights_sha256,
        "model_source": loaded.model_source,
        "checkpoint": loaded.spec.to_dict(),
        "dataset": evaluation.dataset.name,
        "source": evaluation.dataset.source,
        "indices": evaluation.indices.tolist(),
        "labels": evaluation.y.tolist(),
        "data_sha256": hashlib.sha256(
            evaluation.x.detach().cpu().contiguous().numpy().tobytes()
        ).hexdigest(),
        "config": config.to_dict(),
        "device": device.type,
        "versions": package_versions(),
        "source_sha256": source_sha256(),
    }


SOURCE_PACKAGES = (
    "analysis",
    "attacks",
    "checkpoints",
    "commands",
    "core",
    "flatness",
    "torchutil",
)
"""The packages whose source `source_sha256` hashes: the command (its settings) and core (the
records units hold) count as well as the domain; the reports, rendered from the document,
never make a unit."""

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder that holds the packages."""


@functools.cache
def source_sha256(root: Path = SOURCE_ROOT) -> str:
    """SHA-256 over the Python source of the packages (under ``root``) that compute an audit's
    units: the version number of a working copy stays the same from one change to the next,
    and a unit made by other code may not even have the shape this code expects."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _say(line: str) -> None:
    """``line`` on stderr, on a line of its own: a unit is loaded or refused while the attacks'
    progress bar is drawn there, which ``tqdm.write`` clears and redraws around it."""
    tqdm.write(line, file=sys.stderr)


class UnitCache:
    """The finished units of one audit, under ``folder``.

    The caller owns the folder while it uses the cache (the audit holds its
    :class:`FolderLock`): the cache discards a folder of another key, and removes it once
    the document is written.

    Args:
        folder: ``OUT/<name>/.partial``.
        identity: what the units were computed from (see the module's docstring); hashed
            into the key.
        fresh: discard whatever the folder holds.
        writer: this process writes unit files (under torch.distributed only rank 0 does;
            the others compute the same values and read nothing).
        report: called with one line for the user (to stderr by default).
        flag: the flag the folder came from, for the message of an error while writing it.

    Attributes:
        resumed: the units loaded instead of computed, in order.
    """

    def __init__(
        self,
        folder: Path,
        identity: dict[str, Any],
        *,
        fresh: bool = False,
        writer: bool = True,
        report: Callable[[str], None] | None = None,
        flag: str = "--out",
    ) -> None:
        self.folder = folder
        self.flag = flag
        self.key = cache_key(identity)
        self.writer = writer
        self.resumed: list[str] = []
        self._report = report or _say
        self._ready = False
        self._valid = False
        if not folder.exists():
            return
        if fresh:
            self._discard(f"--fresh: discarding the finished units in {folder}")
            return
        stored = self._stored_key()
        if stored == self.key:
            self._valid = True
            units = sorted(p.stem for p in folder.glob("*.pt"))
            if units:
                self._report(
                    f"resuming: {len(units)} finished units in {folder} (--fresh starts over)"
                )
        else:
            self._discard(
                "the checkpoint, evaluation set or configuration changed since the "
                f"interrupted run: discarding its finished units in {folder} (--fresh discards "
                "them in any case)"
            )

    def _stored_key(self) -> str | None:
        try:
            data = json.loads((self.folder / "key.json").read_text())
        except (OSError, ValueError):
            return None
        key = data.get("key") if isinstance(data, dict) else None
        return key if isinstance(key, str) else None

    def _discard(self, line: str) -> None:
        self._report(line)
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, unit: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.=+-]", "_", unit) + ".pt")

    def load(self, unit: str) -> Any:
        """The stored value of ``unit``, or None when it is not there, or was made under
        another key, or is damaged (then it is recomputed, and one line says why)."""
        if not self._valid:
            return None
        path = self._path(unit)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            return self._reject(unit, path, f"its stored copy cannot be read ({err})")
        body, problem = self._body(unit, data)
        if body is None:
            return self._reject(unit, path, problem)
        try:
            with torch.serialization.safe_globals(list(SAFE_TYPES)):
                value = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged unit is recomputed, never trusted
            return self._reject(unit, path, f"its stored copy does not load ({one_line(err)})")
        self.resumed.append(unit)
        return value

    def _body(self, unit: str, data: bytes) -> tuple[bytes | None, str]:
        """The value's bytes of a unit file, or None and what is wrong with it."""
        if not data.startswith(_MAGIC):
            return None, "its stored copy is not a unit file of this version of the toolkit"
        line, newline, body = data[len(_MAGIC) :].partition(b"\n")
        try:
            header = json.loads(line) if newline else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            return None, "its stored copy is damaged (no readable header)"
        if header.get("unit") != unit:
            return None, f"its stored copy holds another unit ({header.get('unit')!r})"
        if header.get("key") != self.key:
            return None, (
                "its stored copy was made for another checkpoint, evaluation set or configuration"
            )
        if header.get("size") != len(body) or header.get("sha256") != _sha256(body):
            return None, "its stored copy is damaged (its SHA-256 does not match)"
        return body, ""

    def _reject(self, unit: str, path: Path, why: str) -> None:
        self._report(f"recomputing {unit}: {why} ({path}; --fresh discards every finished unit)")

    def store(self, unit: str, value: Any) -> None:
        """Write ``value`` as ``unit``, atomically (nothing unless this process writes).

        Raises:
            InputError: the folder cannot be written (a full disk, a quota): one line naming
                the file, the flag and the fix, and that the finished units are kept.
        """
        if not self.writer:
            return
        buffer = io.BytesIO()
        torch.save(to_device(value, "cpu"), buffer)
        body = buffer.getvalue()
        header = {"unit": unit, "key": self.key, "size": len(body), "sha256": _sha256(body)}
        path = self.folder
        try:
            if not self._ready:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / "key.json"
                atomic_write_bytes(path, json.dumps({"key": self.key}).encode() + b"\n")
                self._ready = self._valid = True
            path = self._path(unit)
            atomic_write_bytes(path, _MAGIC + json.dumps(header).encode() + b"\n" + body)
        except OSError as err:
            raise self._unwritable(path, err) from None

    def _unwritable(self, path: Path, err: OSError) -> InputError:
        """The line for an OS error while writing ``path`` of the folder."""
        finished = len(list(self.folder.glob("*.pt"))) if self._ready else 0
        units = f"{finished} finished unit{'s stay' if finished != 1 else ' stays'}"
        kept = (
            f"its {units} in {self.folder}, and the same command resumes from them"
            if finished
            else "no unit was finished yet"
        )
        return InputError(f"{output_error(path, self.flag, err)}; the audit stopped here: {kept}")

    def unit(
        self, name: str, compute: Callable[[], T], device: torch.device | None = None
    ) -> tuple[T, bool]:
        """The stored value of ``name`` (tensors on ``device``, default the CPU), else
        ``compute()``, stored; and whether it was loaded."""
        # Under torch.distributed rank 0 reads (the others may not see its disk) and hands the
        # value on, so that every process computes or loads the same units.
        stored = self.load(name) if self.writer else None
        if distributed.is_distributed():
            stored = distributed.broadcast_object(stored)
        if stored is not None:
            return (stored if device is None else to_device(stored, device)), True
        value = compute()
        self.store(name, value)
        return value, False

    def memo(self, device: torch.device | None = None) -> Memo[str]:
        """``unit`` with ``device`` bound: the audit's memo (``torchutil.Memo``), which the
        attack suite, flatness and the pipeline's other units go through."""

        def kept(name: str, compute: Callable[[], T], /) -> tuple[T, bool]:
            return self.unit(name, compute, device)

        return kept

    def remove(self) -> None:
        """Delete the folder: the document it served is complete."""
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)


class FolderBusy(InputError):
    """Another audit holds the folder's lock: this one is refused (exit status 2)."""


class FolderLock:
    """An exclusive lock on an audit's folder ``OUT/<name>/``, held until :meth:`release`.

    The lock is an ``flock`` on ``OUT/<name>/.audit.lock``, so the operating system releases
    it when its process ends, however it ends: a killed audit never leaves a folder locked.
    The file holds the owner's pid, host and start time, for the message of a refused run; it
    is removed on release (under the lock, and a run that locked a removed file locks
    again), with the folders the lock created when they are still empty.

    Attributes:
        folder: ``OUT/<name>/``.
        path: the lock file.
    """

    def __init__(self, folder: Path, path: Path, handle: int, created: list[Path]) -> None:
        self.folder = folder
        self.path = path
        self._handle: int | None = handle
        self._created = created

    @classmethod
    def acquire(cls, folder: Path) -> FolderLock:
        """Lock ``folder`` (created if missing), without waiting.

        Raises:
            FolderBusy: another process holds it; the message names it and what to do.
            OSError: the folder or the lock file cannot be created or written (a full
                disk), or its file system has no locks.
        """
        created = [f for f in (folder, *folder.parents) if not f.exists()]
        try:
            return cls._acquire(folder, created)
        except BaseException:
            _remove_empty(created)
            raise

    @classmethod
    def _acquire(cls, folder: Path, created: list[Path]) -> FolderLock:
        path = folder / LOCK
        for _ in range(_LOCK_ATTEMPTS):
            folder.mkdir(parents=True, exist_ok=True)
            try:
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # the folder was removed by a run releasing it: again
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(handle)
                os.close(handle)
                raise FolderBusy(
                    f"{folder} is in use by another audit ({holder}); wait until it ends "
                    "(if it was interrupted, the same command resumes its finished units), or "
                    "give another --out (--fresh does not take the folder from a running "
                    "audit)"
                ) from None
            except BaseException:
                os.close(handle)
                raise
            if _same_file(handle, path):
                record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
                try:
                    os.ftruncate(handle, 0)
                    os.pwrite(handle, json.dumps(record).encode() + b"\n", 0)
                except BaseException:  # a full disk: no lock, and no lock file, is left
                    path.unlink(missing_ok=True)
                    os.close(handle)
                    raise
                return cls(folder, path, handle, created)
            # The owner removed the file between our open and our lock: lock the new one.
            os.close(handle)
        raise FolderBusy(
            f"{folder} could not be locked: other audits keep taking and releasing it; wait "
            "until they end, or give another --out (--fresh does not take the folder from a "
            "running audit)"
        )

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporary files an audit killed while writing left in the folder and
        its ``.partial/`` (``core.boundary.remove_stale_temporaries``); the lock makes
        sure no other audit is writing them."""
        if self._handle is None:
            raise RuntimeError(f"{self.folder} is no longer locked by this process")
        return [
            *remove_stale_temporaries(self.folder),
            *remove_stale_temporaries(self.folder / PARTIAL),
        ]

    def release(self) -> None:
        """Remove the lock file and unlock (again: nothing)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            if _same_file(handle, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(handle)
        _remove_empty(self._created)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


_LOCK_ATTEMPTS = 20


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _same_file(handle: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``handle``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(handle: int) -> str:
    """Who holds the lock, as its file says: "pid 123 on host h, started ...", as far as
    known."""
    try:
        record = json.loads(os.pread(handle, 4096, 0))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return "its pid is not known yet"
    words = f"pid {record['pid']}"
    host = record.get("host")
    if isinstance(host, str) and host != socket.gethostname():
        words += f" on host {host}"
    started = record.get("started")
    if isinstance(started, (int, float)):
        words += f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return words

"""A full disk for an audit's finished units or its lock: one line naming the path and the flag."""

from __future__ import annotations

import errno
import os

import pytest
from resume_helpers import ZOO, _command

from analysis.resume import LOCK, PARTIAL
from commands.audit import main as audit_main
from core.boundary import EXIT_INPUT


def _full_disk_for(monkeypatch, name: str) -> None:
    """``os.fsync`` raises "No space left on device" (as a full disk does, without a path) for
    the files whose path contains ``name``; every other file is written."""
    real = os.fsync

    def fsync(handle: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{handle}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("key.json", "no unit was finished yet"),
        (
            "probes.pt",
            "its 1 finished unit stays in {partial}, and the same command resumes from them",
        ),
    ],
)
def test_a_full_disk_for_the_units_is_one_line_naming_the_path_and_flag(
    tmp_path, capsys, monkeypatch, name, kept
):
    """The finished units go to the same disk as the document: a full disk stops the audit
    with the line of any output error (the file, --out, the fix), keeps what was finished and
    leaves no temporary file and no lock."""
    out = tmp_path / "out"
    command = [str(ZOO), *_command(out, "--quiet")[4:]]
    _full_disk_for(monkeypatch, f"/.{name}.")
    status = audit_main(command)
    err = capsys.readouterr().err
    partial = out / ZOO.stem / PARTIAL
    assert status == EXIT_INPUT, err
    assert err.splitlines() == [
        f"error: --out {partial / name} cannot be written: No space left on device; free space "
        f"on that disk, or choose a folder on another disk; the audit stopped here: "
        + kept.format(partial=partial)
    ]
    # No temporary file and no lock file: only the units finished before the disk filled.
    left = sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*"))
    assert left == ([] if name == "key.json" else ["batch-attacks.pt", "key.json"])
    assert sorted(p.name for p in (out / ZOO.stem).iterdir()) == [PARTIAL]


def test_a_full_disk_for_the_lock_is_one_line_naming_the_path_and_flag(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"

    def full(handle: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    status = audit_main([str(ZOO), *_command(out, "--quiet")[4:]])
    err = capsys.readouterr().err
    assert status == EXIT_INPUT, err
    assert err == (
        f"error: --out {out / ZOO.stem / LOCK} cannot be written: No space left on device; free "
        "space on that disk, or choose a folder on another disk\n"
    )
    assert not out.exists()

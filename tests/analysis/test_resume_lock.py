"""The lock on an audit's output folder: one holder at a time, cleaned up after, never stuck."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest
from resume_helpers import ROOT, ZOO, _hold

from analysis.resume import LOCK, FolderBusy, FolderLock
from checkpoints.train import ZOO_DIR
from commands.audit import main as audit_main
from core.boundary import EXIT_INPUT


def test_a_refusal_of_one_checkpoint_leaves_nothing_of_the_others(tmp_path, capsys):
    """Every folder is locked before any work: when the second checkpoint's folder is busy,
    the first one's lock and the folders it created are gone again."""
    out = tmp_path / "out"
    other = ZOO_DIR / "digits-mlp-dropout.pt"
    handle = _hold(out / other.stem / LOCK)
    try:
        status = audit_main([str(ZOO), str(other), "--preset", "quick", "--out", str(out)])
    finally:
        os.close(handle)
    err = capsys.readouterr().err
    assert status == EXIT_INPUT and len(err.splitlines()) == 1, err
    assert f"error: {out / other.stem} is in use by another audit (pid {os.getpid()})" in err
    assert sorted(p.name for p in out.iterdir()) == [other.stem]


def test_folder_lock_refuses_a_second_holder_and_cleans_up(tmp_path):
    folder = tmp_path / "new" / "out" / "model"
    with FolderLock.acquire(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderBusy) as refused:
            FolderLock.acquire(folder)
        assert f"(pid {os.getpid()}, started " in str(refused.value)
        assert "--fresh" in str(refused.value)
        (folder / "audit.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["audit.json"]
    lock.release()  # again: nothing
    # Folders the lock created are removed when they stay empty, up to the first that existed.
    FolderLock.acquire(tmp_path / "a" / "b").release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_folder_lock_takes_the_new_file_when_the_holder_removed_the_old(tmp_path, monkeypatch):
    """A run that opened the lock file just before its holder released (and removed) it locks
    a file no one else will see: it must notice and lock the new file instead."""
    folder = tmp_path / "model"
    holder = FolderLock.acquire(folder)
    real_flock = fcntl.flock
    calls: list[int] = []

    def flock_after_release(handle: int, operation: int) -> None:
        calls.append(handle)
        if len(calls) == 1:
            holder.release()  # between the waiting run's open and its lock
        real_flock(handle, operation)

    monkeypatch.setattr("analysis.resume.fcntl.flock", flock_after_release)
    taken = FolderLock.acquire(folder)
    monkeypatch.setattr("analysis.resume.fcntl.flock", real_flock)
    assert len(calls) == 2 and taken.path.exists()
    with pytest.raises(FolderBusy):
        FolderLock.acquire(folder)
    taken.release()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    folder = tmp_path / "model"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from analysis.resume import FolderLock\n"
        "FolderLock.acquire(Path(sys.argv[1]))\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        with pytest.raises(FolderBusy, match=f"pid {process.pid},"):
            FolderLock.acquire(folder)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert (folder / LOCK).exists()
    with FolderLock.acquire(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (folder / LOCK).exists()

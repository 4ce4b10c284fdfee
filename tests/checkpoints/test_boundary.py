"""The atomic writer's temporary files: one left by a writer killed before its rename is
removed, one still being written is not, and nothing else is."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from checkpoints import boundary
from checkpoints.boundary import TEMPORARY_NAME, atomic_write_bytes, remove_stale_temporaries

ROOT = Path(__file__).resolve().parents[2]

# A writer that stops for good just before its rename, as a SIGKILL at that instant leaves it.
_STOPPED_WRITER = """
import sys, time
from pathlib import Path
from checkpoints import boundary

def stop(source, target):
    print("written", flush=True)
    time.sleep(300)

boundary.os.replace = stop
boundary.atomic_write_bytes(Path(sys.argv[1]), b"x" * 100_000)
"""


def test_a_writer_killed_before_its_rename_leaves_a_temporary_file_that_is_removed(tmp_path):
    target = tmp_path / "audit.json"
    alike = ["notes.tmp", ".audit.json.tmp", ".audit.json.ABCDEFGH.tmp", "audit.json.abcd1234.tmp"]
    for name in alike:
        (tmp_path / name).write_text("not ours")
    process = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_WRITER, str(target)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "written\n"
        (temporary,) = [p for p in tmp_path.iterdir() if p.name not in alike]
        assert TEMPORARY_NAME.fullmatch(temporary.name)
        assert temporary.stat().st_size == 100_000
        # Its writer is alive: it holds the file's lock, so the file is left alone.
        assert remove_stale_temporaries(tmp_path) == []
        assert temporary.exists()
    finally:
        process.kill()
        process.wait(timeout=60)
    assert remove_stale_temporaries(tmp_path) == [temporary]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(alike)
    assert not target.exists()


def test_a_temporary_file_removed_before_its_lock_is_written_again(tmp_path, monkeypatch):
    """The one instant a live writer's file can be taken for a stale one is between its
    creation and its lock; the writer then writes it again."""
    real_mkstemp = tempfile.mkstemp
    created: list[str] = []

    def mkstemp_then_removed(**kwargs):
        handle, name = real_mkstemp(**kwargs)
        created.append(name)
        if len(created) == 1:
            Path(name).unlink()  # as remove_stale_temporaries would, before the lock
        return handle, name

    monkeypatch.setattr(boundary.tempfile, "mkstemp", mkstemp_then_removed)
    atomic_write_bytes(tmp_path / "unit.pt", b"value")
    assert len(created) == 2
    assert (tmp_path / "unit.pt").read_bytes() == b"value"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit.pt"]

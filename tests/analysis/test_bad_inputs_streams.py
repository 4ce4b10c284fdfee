"""Streams, devices and full disks: a FIFO or a device is refused without reading it, and an
error while writing is one line naming the path and the flag."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_builders import _audit, _tree, _write

from commands import audit, gate
from core.boundary import EXIT_INPUT


def _fifo(tmp: Path, name: str) -> str:
    os.mkfifo(tmp / name)
    return str(tmp / name)


STREAMS = {
    "audit --suite FIFO": lambda t: ["analysis.audit", *_audit("--suite", _fifo(t, "s.toml"))(t)],
    "audit --suite /dev/zero": lambda t: ["analysis.audit", *_audit("--suite", "/dev/zero")(t)],
    "audit --baseline FIFO": lambda t: [
        "analysis.audit",
        *_audit("--baseline", _fifo(t, "b.json"))(t),
    ],
    "audit CHECKPOINT FIFO": lambda t: [
        "analysis.audit",
        *_audit("--arch", "mlp", "--dataset", "digits", checkpoint=_fifo(t, "m.pt"))(t),
    ],
    "audit --data FIFO": lambda t: ["analysis.audit", *_audit("--data", _fifo(t, "d.npz"))(t)],
    "gate RESULT FIFO": lambda t: ["analysis.gate", _fifo(t, "r.json"), "b.json"],
    "reports.html FIFO": lambda t: ["reports.html", _fifo(t, "audit.json")],
    "reports.compare FIFO": lambda t: ["reports.compare", _fifo(t, "a.json"), "b.json"],
    "inspect FIFO": lambda t: ["checkpoints.inspect", _fifo(t, "m.pt")],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_or_device_is_refused_without_reading_it(name, tmp_path):
    """A FIFO would block every reader until a writer came (and /dev/zero never ends): each
    command refuses it from its file type, at once, in one line, with status 2."""
    argv = STREAMS[name](tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(audit.__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == EXIT_INPUT, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "not a regular file but a" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_error_while_writing_is_one_line_naming_the_path_and_flag(result_document, tmp_path):
    """A real write error after every check passed (the file-size limit of the process, which
    the kernel reports as "File too large" without a path): one line, status 2, nothing left."""
    result = _write(tmp_path / "result.json", json.dumps(result_document))
    baseline = _write(tmp_path / "baseline.json", json.dumps(result_document))
    junit = tmp_path / "gate.xml"

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    done = subprocess.run(
        [sys.executable, "-m", "analysis.gate", str(result), str(baseline), "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(audit.__file__).resolve().parents[1],
        preexec_fn=limit_file_size,
    )
    assert done.returncode == EXIT_INPUT, done.stderr
    assert done.stderr == (
        f"error: --junit {junit} cannot be written: File too large; the file is larger than "
        "this process may write (ulimit -f): raise that limit, or choose another path\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "result.json"]


@pytest.mark.parametrize("update", [False, True], ids=["junit", "update-baseline"])
def test_a_full_disk_is_one_line_naming_the_path_and_flag(
    result_document, tmp_path, capsys, monkeypatch, update
):
    """No space left: the error names no path; the line names the path, the flag and the fix,
    and no temporary file is left behind."""
    result = _write(tmp_path / "result.json", json.dumps(result_document))
    if update:
        target, flag = tmp_path / "new.json", "BASELINE (with --update-baseline)"
        argv = [str(result), str(target), "--update-baseline"]
    else:
        baseline = _write(tmp_path / "baseline.json", json.dumps(result_document))
        target, flag = tmp_path / "gate.xml", "--junit"
        argv = [str(result), str(baseline), "--junit", str(target)]
    before = _tree(tmp_path)

    def full(handle: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert gate.main(argv) == EXIT_INPUT
    assert capsys.readouterr().err == (
        f"error: {flag} {target} cannot be written: No space left on device; free space on "
        "that disk, or choose a folder on another disk\n"
    )
    assert _tree(tmp_path) == before

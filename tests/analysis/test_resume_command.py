"""Audits of the command line killed, changed, or run twice at once: the resumed document is the
uninterrupted one, and a second audit into a busy folder is refused without deleting anything.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from audit_helpers import without_timings
from resume_helpers import ROOT, ZOO, _command, _hold

from analysis.resume import LOCK, PARTIAL
from checkpoints.train import ZOO_DIR
from core.boundary import EXIT_INPUT, EXIT_TERMINATED, TEMPORARY_NAME


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "out"
    done = _run(_command(out))
    assert done.returncode == 0, done.stderr
    target = out / ZOO.stem / "audit.json"
    assert sorted(p.name for p in target.parent.iterdir()) == ["audit.json"]
    document = json.loads(target.read_text())
    target.unlink()
    return out, document


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_audit_resumes_to_the_uninterrupted_document(uninterrupted, signum):
    out, reference = uninterrupted
    partial = out / ZOO.stem / PARTIAL
    target = out / ZOO.stem / "audit.json"
    process = subprocess.Popen(
        _command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not list(partial.glob("*.pt")) and process.poll() is None:
        assert time.time() < deadline, "no unit was finished"
        time.sleep(0.05)
    assert process.poll() is None, "the audit finished before it could be stopped"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    expected = EXIT_TERMINATED if signum == signal.SIGTERM else -signal.SIGKILL
    assert process.returncode == expected, err
    if signum == signal.SIGTERM:
        assert "stopped by SIGTERM" in err and "the same command resumes" in err, err
    assert not target.exists()
    kept = sorted(p.stem for p in partial.glob("*.pt"))
    assert kept
    # SIGTERM releases the folder's lock and removes its file; SIGKILL leaves the file, but
    # the lock went with the process, so the next run is not refused.
    assert (out / ZOO.stem / LOCK).exists() == (signum == signal.SIGKILL)

    resumed = _run(_command(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(kept)} finished units" in resumed.stderr
    assert "(resumed)" in resumed.stderr or "resumed" in resumed.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["audit.json"]
    document = json.loads(target.read_text())
    target.unlink()
    assert without_timings(document) == without_timings(reference)


def _interrupted_run(command: list[str], partial: Path) -> None:
    """Start ``command`` and kill it once it has finished a unit."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not list(partial.glob("*.pt")) and process.poll() is None:
        assert time.time() < deadline, "no unit was finished"
        time.sleep(0.05)
    assert process.poll() is None, "the audit finished before it could be stopped"
    process.kill()
    process.wait()


def test_changed_configuration_or_checkpoint_does_not_reuse_units(uninterrupted, tmp_path):
    out, _ = uninterrupted
    partial = out / ZOO.stem / PARTIAL
    _interrupted_run(_command(out), partial)
    changed = _run(_command(out, "--seed", "1"))
    assert changed.returncode == 0, changed.stderr
    assert "discarding its finished units" in changed.stderr
    assert "resuming" not in changed.stderr and not partial.exists()

    # Another checkpoint under the same name (so the same output folder): another hash.
    other = tmp_path / ZOO.name
    shutil.copy(ZOO_DIR / "digits-mlp-dropout.pt", other)
    _interrupted_run(_command(out), partial)
    moved = _run([*_command(out)[:3], str(other), *_command(out)[4:]])
    assert moved.returncode == 0, moved.stderr
    assert "discarding its finished units" in moved.stderr
    assert "resuming" not in moved.stderr and not partial.exists()


def _recomputed(stderr: str) -> list[str]:
    # A line may follow the progress bar's redraw ("\r") on the same terminal line.
    lines = stderr.replace("\r", "\n").splitlines()
    return [line for line in lines if line.startswith("recomputing ")]


def test_planted_or_damaged_units_never_stop_the_audit(uninterrupted, tmp_path):
    """Units of another model, a damaged unit and a wrong value planted among an interrupted
    audit's units: each is recomputed with one line, and the document is the uninterrupted
    one (no status 3)."""
    out, reference = uninterrupted
    folder = out / ZOO.stem
    partial = folder / PARTIAL
    other = tmp_path / "other"
    other_command = _command(other)
    other_command[3] = str(ZOO_DIR / "digits-mlp-dropout.pt")
    _interrupted_run(other_command, other / "digits-mlp-dropout" / PARTIAL)
    _interrupted_run(_command(out), partial)
    kept = sorted(partial.glob("*.pt"))
    kept[0].write_bytes(kept[0].read_bytes()[:-7])
    planted = {kept[0].name}
    for path in (other / "digits-mlp-dropout" / PARTIAL).glob("*.pt"):
        if not (partial / path.name).exists():
            shutil.copy(path, partial / path.name)
            planted.add(path.name)
    buffer = io.BytesIO()
    torch.save({"unit": "probes", "value": torch.zeros(3)}, buffer)
    (partial / "probes.pt").write_bytes(buffer.getvalue())
    planted.add("probes.pt")

    done = _run(_command(out))
    assert done.returncode == 0, done.stderr
    recomputed = _recomputed(done.stderr)
    assert len(recomputed) == len(planted), done.stderr
    assert all("--fresh" in line for line in recomputed)
    assert "recomputing probes: its stored copy is not a unit file" in done.stderr
    target = folder / "audit.json"
    assert sorted(p.name for p in folder.iterdir()) == ["audit.json"]
    document = json.loads(target.read_text())
    target.unlink()
    assert without_timings(document) == without_timings(reference)


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_audit_into_a_locked_folder_is_refused_and_deletes_nothing(uninterrupted):
    """While an audit holds the folder (simulated by this process holding its lock), another
    one into the same place, with --fresh or another configuration too, is refused in one
    line naming the holder's pid and touches nothing; once the lock is free, the same command
    resumes, removes the stale temporary files and writes the uninterrupted document."""
    out, reference = uninterrupted
    folder = out / ZOO.stem
    partial = folder / PARTIAL
    _interrupted_run(_command(out), partial)
    kept = sorted(p.stem for p in partial.glob("*.pt"))
    # The kill may itself land inside an atomic write and leave that write's temporary file.
    killed = [p for p in folder.rglob("*.tmp") if TEMPORARY_NAME.fullmatch(p.name)]
    # Temporary files of the atomic writer, as a kill before the rename leaves them, and two
    # files that merely look alike.
    stale = [folder / ".audit.json.k2_9xq0a.tmp", partial / ".probes.pt.0abc_d9z.tmp"]
    alike = [folder / "notes.tmp", folder / ".audit.json.TOOLONG12.tmp"]
    for path in stale + alike:
        path.write_text(json.dumps(reference))
    try:
        _refused_then_resumed(out, reference, kept, len(stale) + len(killed), alike)
    finally:
        for path in alike:
            path.unlink(missing_ok=True)


def _refused_then_resumed(
    out: Path, reference: dict, kept: list[str], stale: int, alike: list[Path]
) -> None:
    folder = out / ZOO.stem
    handle = _hold(folder / LOCK)
    try:
        before = _files(folder)
        for extra in ([], ["--fresh"], ["--seed", "1"]):
            refused = _run(_command(out, *extra))
            assert refused.returncode == EXIT_INPUT, refused.stderr
            lines = refused.stderr.splitlines()
            assert len(lines) == 1, refused.stderr
            assert lines[0] == (
                f"error: {folder} is in use by another audit (pid {os.getpid()}); wait until "
                "it ends (if it was interrupted, the same command resumes its finished units), "
                "or give another --out (--fresh does not take the folder from a running audit)"
            )
            assert _files(folder) == before, extra
    finally:
        os.close(handle)

    resumed = _run(_command(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"removed {stale} temporary files a killed run left in {folder}" in resumed.stderr
    assert f"resuming: {len(kept)} finished units" in resumed.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["audit.json", *(p.name for p in alike)]
    )
    document = json.loads((folder / "audit.json").read_text())
    (folder / "audit.json").unlink()
    assert without_timings(document) == without_timings(reference)


def test_two_audits_at_once_give_whole_documents_or_a_clean_refusal(uninterrupted):
    """The same command twice at once: whichever order the two take, each ends with the whole
    document (status 0) or one line refusing it (status 2), at least one writes, and nothing
    is left beside the document."""
    out, reference = uninterrupted
    folder = out / ZOO.stem
    processes = [
        subprocess.Popen(
            _command(out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    codes = sorted(process.returncode for process in processes)
    assert codes in ([0, 0], [0, EXIT_INPUT]), outputs
    for process, (_, err) in zip(processes, outputs, strict=True):
        if process.returncode == EXIT_INPUT:
            assert len(err.splitlines()) == 1, err
            assert err.startswith(f"error: {folder} is in use by another audit (pid "), err
    assert sorted(p.name for p in folder.iterdir()) == ["audit.json"]
    document = json.loads((folder / "audit.json").read_text())
    (folder / "audit.json").unlink()
    assert without_timings(document) == without_timings(reference)

"""An interrupted audit resumes from its finished units and gives the uninterrupted document.

The oracle is the uninterrupted run of the same command: a resumed document must equal it in
everything but timings.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from audit_helpers import quick_config, without_timings

from analysis.config import build_suite
from analysis.pipeline import evaluation_set, run_audit
from analysis.resume import LOCK, PARTIAL, FolderBusy, FolderLock, UnitCache
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from commands.audit import main as audit_main
from core.boundary import EXIT_INPUT, EXIT_TERMINATED, TEMPORARY_NAME
from core.document import AuditResult

ZOO = ZOO_DIR / "digits-mlp-qsd.pt"
ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


class _Stopping(UnitCache):
    """Raises KeyboardInterrupt right after its ``stop``-th unit is written (0: never)."""

    def __init__(self, *args, stop: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop
        self.stored: list[str] = []

    def store(self, unit, value) -> None:
        super().store(unit, value)
        self.stored.append(unit)
        if len(self.stored) == self.stop:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def audited():
    config = quick_config(num_samples=40, flatness=True)
    loaded = load_checkpoint(ZOO)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    reference = run_audit(loaded, evaluation, config, device=CPU)
    return loaded, evaluation, config, reference


def test_every_unit_kind_is_kept_and_resumes_to_the_same_document(audited, tmp_path):
    loaded, evaluation, config, reference = audited
    folder = tmp_path / PARTIAL
    counting = _Stopping(folder, {"run": 1})
    whole = run_audit(loaded, evaluation, config, device=CPU, cache=counting)
    assert without_timings(whole) == without_timings(reference)
    units = counting.stored
    # The probes, both batch choices, attacks at each norm and epsilon, the sweeps and each
    # flatness estimator in both modes.
    assert {"probes", "batch-attacks", "batch-flatness"} <= set(units)
    assert any(u.startswith("linf-sweep-") for u in units)
    assert any(u.startswith("l2-independent-sweep-") for u in units)
    assert any(u.startswith("flatness-eval-") for u in units)
    assert any(u.startswith("flatness-train-") for u in units)
    shutil.rmtree(folder)
    for stop in (1, len(units) // 2, len(units) - 1):
        with pytest.raises(KeyboardInterrupt):
            run_audit(
                loaded,
                evaluation,
                config,
                device=CPU,
                cache=_Stopping(folder, {"run": 1}, stop=stop),
            )
        resumed = UnitCache(folder, {"run": 1}, report=lambda line: None)
        document = run_audit(loaded, evaluation, config, device=CPU, cache=resumed)
        assert resumed.resumed == units[:stop], stop
        assert without_timings(document) == without_timings(reference), stop
        shutil.rmtree(folder)


def test_another_identity_or_fresh_discards_the_units(tmp_path):
    folder = tmp_path / PARTIAL
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(3))
    lines: list[str] = []
    same = UnitCache(folder, {"config": 1}, report=lines.append)
    assert torch.equal(same.load("probes"), torch.arange(3)) and "resuming" in lines[-1]
    changed = UnitCache(folder, {"config": 2}, report=lines.append)
    assert "changed" in lines[-1] and not folder.exists()
    assert changed.load("probes") is None
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(3))
    fresh = UnitCache(folder, {"config": 1}, fresh=True, report=lines.append)
    assert "--fresh" in lines[-1] and fresh.load("probes") is None and fresh.resumed == []


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _split(data: bytes) -> tuple[bytes, dict, bytes]:
    """A unit file's first line, header and value bytes."""
    magic, _, rest = data.partition(b"\n")
    header, _, body = rest.partition(b"\n")
    return magic + b"\n", json.loads(header), body


def _unit_file(magic: bytes, header: dict, body: bytes) -> bytes:
    """A unit file with ``body`` under ``header``, its size and SHA-256 made to match."""
    header = {**header, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return magic + json.dumps(header).encode() + b"\n" + body


def test_a_unit_file_never_runs_code(tmp_path, monkeypatch):
    """A planted pickle under a valid header (the right unit, key and checksum) is refused by
    the loader, not executed, and recomputed; a bare pickle is refused before it is read."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / PARTIAL
    cache = UnitCache(folder, {"config": 1})
    cache.store("probes", torch.zeros(1))
    magic, header, _ = _split((folder / "probes.pt").read_bytes())
    buffer = io.BytesIO()
    torch.save(_Payload(), buffer)
    (folder / "probes.pt").write_bytes(_unit_file(magic, header, buffer.getvalue()))
    with open(folder / "other.pt", "wb") as out:
        pickle.dump({"unit": "other", "value": _Payload()}, out)
    lines: list[str] = []
    again = UnitCache(folder, {"config": 1}, report=lines.append)
    value, loaded = again.unit("probes", lambda: torch.ones(2))
    assert not loaded and torch.equal(value, torch.ones(2))
    assert again.load("other") is None
    assert not (tmp_path / "PWNED").exists()
    assert any(
        line.startswith("recomputing probes: its stored copy does not load") for line in lines
    )
    assert any(
        line.startswith("recomputing other: its stored copy is not a unit") for line in lines
    )


def test_a_unit_made_under_another_key_is_recomputed(tmp_path):
    """The folder's key.json is this run's, but one unit file was made under another key
    (copied from another audit's folder): it is recomputed, with one line, never loaded."""
    other, folder = tmp_path / "other" / PARTIAL, tmp_path / "this" / PARTIAL
    UnitCache(other, {"config": 1}).store("probes", torch.full((3,), 7.0))
    UnitCache(folder, {"config": 2}).store("batch-attacks", torch.arange(2))
    shutil.copy(other / "probes.pt", folder / "probes.pt")
    lines: list[str] = []
    cache = UnitCache(folder, {"config": 2}, report=lines.append)
    value, loaded = cache.unit("probes", lambda: torch.zeros(3))
    assert not loaded and torch.equal(value, torch.zeros(3))
    assert lines[-1] == (
        "recomputing probes: its stored copy was made for another checkpoint, evaluation set "
        f"or configuration ({folder / 'probes.pt'}; --fresh discards every finished unit)"
    )
    # This run's own unit is still resumed, and the recomputed one is stored under its key.
    assert torch.equal(cache.unit("batch-attacks", lambda: torch.zeros(2))[0], torch.arange(2))
    again = UnitCache(folder, {"config": 2}, report=lines.append)
    assert torch.equal(again.load("probes"), torch.zeros(3))
    assert cache.resumed == ["batch-attacks"] and again.resumed == ["probes"]


def _flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]


def _wrong_value(data: bytes) -> bytes:
    """What the unit file would be under the format without a header: a plain torch file of
    another value."""
    buffer = io.BytesIO()
    torch.save({"unit": "probes", "value": torch.zeros(3)}, buffer)
    return buffer.getvalue()


def _renamed(data: bytes) -> bytes:
    magic, header, body = _split(data)
    return _unit_file(magic, {**header, "unit": "batch-attacks"}, body)


def _header_cut(data: bytes) -> bytes:
    return data[: len(data.partition(b"\n")[0]) + 10]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_flip, "is damaged (its SHA-256 does not match)"),
        (lambda data: data[: len(data) // 2], "is damaged (its SHA-256 does not match)"),
        (_header_cut, "is damaged (no readable header)"),
        (lambda data: b"", "is not a unit file of this version of the toolkit"),
        (_wrong_value, "is not a unit file of this version of the toolkit"),
        (_renamed, "holds another unit ('batch-attacks')"),
    ],
    ids=["flipped-bit", "truncated", "header-cut", "empty", "wrong-value", "other-unit"],
)
def test_a_damaged_unit_is_recomputed_in_one_line(tmp_path, damage, why):
    folder = tmp_path / PARTIAL
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(4.0))
    path = folder / "probes.pt"
    path.write_bytes(damage(path.read_bytes()))
    lines: list[str] = []
    cache = UnitCache(folder, {"config": 1}, report=lines.append)
    value, loaded = cache.unit("probes", lambda: torch.ones(4))
    assert not loaded and torch.equal(value, torch.ones(4)) and cache.resumed == []
    assert lines[-1] == (
        f"recomputing probes: its stored copy {why} ({path}; --fresh discards every finished unit)"
    )
    assert torch.equal(UnitCache(folder, {"config": 1}).load("probes"), torch.ones(4))


def _suite_file(folder: Path, num_steps: int) -> Path:
    path = folder / f"pgd-{num_steps}.toml"
    path.write_text(
        'preset = "quick"\n[epsilons]\nlinf = [0.1]\n[[attacks]]\nkind = "pgd"\n'
        f'label = "pgd-ce"\nnum_steps = {num_steps}\nrel_step_size = 0.25\n'
    )
    return path


def _pgd_config(folder: Path, num_steps: int):
    suite = build_suite("quick", "digits", suite_file=_suite_file(folder, num_steps))
    return replace(quick_config(num_samples=40), suite=suite)


def _robust(result: AuditResult) -> list:
    return [norm.reliable_robust_accuracy for norm in result.robustness.norms]


@pytest.mark.parametrize("source", ["another-model", "one-step-suite"])
def test_planted_units_of_another_model_or_suite_are_recomputed(tmp_path, source):
    """Every unit file of another audit (another model of the zoo, or the same model under a
    1-step PGD) planted in this audit's folder, key.json included being this audit's, is
    recomputed: the document is the uninterrupted one."""
    config = _pgd_config(tmp_path, 20)
    loaded = load_checkpoint(ZOO)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    reference = run_audit(loaded, evaluation, config, device=CPU)

    other = tmp_path / "other" / PARTIAL
    if source == "another-model":
        other_loaded, other_config = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt"), config
    else:
        other_loaded, other_config = loaded, _pgd_config(tmp_path, 1)
    other_evaluation = evaluation_set(other_loaded, None, config.num_samples, config.seed)
    planted = run_audit(
        other_loaded,
        other_evaluation,
        other_config,
        device=CPU,
        cache=UnitCache(other, {"checkpoint": other_loaded.sha256, **other_config.to_dict()}),
    )
    # The planted units would change the result if they were taken.
    assert _robust(planted) != _robust(reference)

    identity = {"checkpoint": loaded.sha256, **config.to_dict()}
    folder = tmp_path / "this" / PARTIAL
    with pytest.raises(KeyboardInterrupt):
        run_audit(loaded, evaluation, config, device=CPU, cache=_Stopping(folder, identity, stop=1))
    own = {p.name for p in folder.glob("*.pt")}
    copied = {p.name for p in other.glob("*.pt")}
    assert own and copied - own
    for path in other.glob("*.pt"):
        if path.name not in own:
            shutil.copy(path, folder / path.name)
    lines: list[str] = []
    resumed = UnitCache(folder, identity, report=lines.append)
    document = run_audit(loaded, evaluation, config, device=CPU, cache=resumed)
    assert without_timings(document) == without_timings(reference)
    assert {f"{unit}.pt" for unit in resumed.resumed} == own
    rejected = [line for line in lines if line.startswith("recomputing ")]
    assert len(rejected) == len(copied - own)
    assert all(
        "made for another checkpoint, evaluation set or configuration" in line for line in rejected
    )


def _command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "analysis.audit",
        str(ZOO),
        "--preset",
        "quick",
        "--num-samples",
        "60",
        "--norms",
        "linf",
        "--no-flatness",
        "--no-report",
        "--out",
        str(out),
        *extra,
    ]


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


def _hold(path: Path) -> int:
    """Lock ``path`` as a running audit does, from this process, with this process's pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(handle, 0)
    os.write(handle, json.dumps({"pid": os.getpid()}).encode())
    return handle


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


def test_the_key_follows_the_source_code(tmp_path):
    """A working copy keeps its version number from one change to the next: the key holds a
    SHA-256 of the packages' source, so units made by other code are not resumed."""
    from commands.audit import _SOURCE_PACKAGES, _SOURCE_ROOT, _source_sha256

    # Every package but the reports (rendered from the document, never a unit) counts, so a
    # new package cannot be forgotten.
    packages = {path.parent.name for path in _SOURCE_ROOT.glob("*/__init__.py")}
    assert set(_SOURCE_PACKAGES) == packages - {"reports", "tests", "benchmarks"}
    source_sha256 = _source_sha256.__wrapped__  # not the cached value
    for package in _SOURCE_PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "sub" / "core.py").write_text("x = 1\n")
    (tmp_path / "attacks" / "notes.txt").write_text("not source")
    first = source_sha256(tmp_path)
    (tmp_path / "attacks" / "notes.txt").write_text("changed, still not source")
    assert source_sha256(tmp_path) == first
    (tmp_path / "flatness" / "sub" / "core.py").write_text("x = 2\n")
    changed = source_sha256(tmp_path)
    assert changed != first
    (tmp_path / "flatness" / "sub" / "core.py").rename(tmp_path / "flatness" / "sub" / "other.py")
    assert source_sha256(tmp_path) not in (first, changed)


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

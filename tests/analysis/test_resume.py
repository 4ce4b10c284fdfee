"""An interrupted audit resumes from its finished units and gives the uninterrupted document.

The oracle is the uninterrupted run of the same command: a resumed document must equal it in
everything but timings.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from audit_helpers import quick_config, without_timings

from analysis.audit import evaluation_set, run_audit
from analysis.resume import PARTIAL, UnitCache
from checkpoints import load_checkpoint
from checkpoints.boundary import EXIT_TERMINATED
from checkpoints.train import ZOO_DIR

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


def test_a_unit_file_never_runs_code(tmp_path, monkeypatch):
    """A planted pickle with the right key is refused (not executed) and recomputed."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / PARTIAL
    cache = UnitCache(folder, {"config": 1})
    cache.store("probes", torch.zeros(1))
    torch.save({"unit": "probes", "value": _Payload()}, folder / "probes.pt")
    with open(folder / "other.pt", "wb") as out:
        pickle.dump({"unit": "other", "value": _Payload()}, out)
    lines: list[str] = []
    again = UnitCache(folder, {"config": 1}, report=lines.append)
    value, loaded = again.unit("probes", lambda: torch.ones(2))
    assert not loaded and torch.equal(value, torch.ones(2))
    assert again.load("other") is None
    assert not (tmp_path / "PWNED").exists()
    assert any("does not load" in line for line in lines)


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
    assert not (target.parent / PARTIAL).exists()
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

    resumed = _run(_command(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(kept)} finished units" in resumed.stderr
    assert "(resumed)" in resumed.stderr or "resumed" in resumed.stderr
    assert not partial.exists()
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

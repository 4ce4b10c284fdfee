"""An audit under torchrun (two CPU processes, gloo) writes the single-process document.

The oracle is the same command in one process: per-sample outcomes, counts and findings must
be identical, floating-point figures (the examples' exact pixels too) equal within 1e-5
relative or 1e-6 absolute (sums over samples are reduced in another order, and the model's
logits may round differently in another batch), and only ``provenance.world_size`` and clock
times differ.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import without_timings

from analysis.documentdiff import differences
from analysis.resume import LOCK, PARTIAL
from checkpoints.train import ZOO_DIR

ZOO = ZOO_DIR / "digits-mlp-dropout.pt"
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def _audit(out: Path) -> list[str]:
    return [
        "-m",
        "analysis.audit",
        str(ZOO),
        "--preset",
        "quick",
        "--num-samples",
        "90",
        "--flatness-samples",
        "40",
        "--no-report",
        "--quiet",
        "--out",
        str(out),
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(out: Path) -> list[str]:
    return [TORCHRUN, "--standalone", "--nproc_per_node=2", *_audit(out)]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill_torchrun(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to torchrun and its workers, as a preempted node gets, and waits until all are
    gone. torchrun starts each worker in a session of its own, so killing torchrun's process
    group would leave the workers running on, beside the run that resumes."""
    workers = _children(process.pid)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while not all(_gone(pid) for pid in workers):
        assert time.time() < deadline, "a worker outlived SIGKILL"
        time.sleep(0.05)


def _document(out: Path) -> dict[str, Any]:
    return json.loads((out / ZOO.stem / "audit.json").read_text())


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = without_timings(document)
    document["provenance"].pop("world_size")
    document["provenance"].pop("command_line")  # names its own --out
    return document


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    done = subprocess.run(
        [sys.executable, *_audit(out)], cwd=ROOT, env=_environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return _document(out)


def test_two_processes_write_the_single_process_document(single, tmp_path):
    done = subprocess.run(
        _torchrun(tmp_path), cwd=ROOT, env=_environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = _document(tmp_path)
    assert single["provenance"]["world_size"] == 1
    assert document["provenance"]["world_size"] == 2
    assert document["flatness"] is not None and document["robustness"]["norms"]
    assert differences(comparable(document), comparable(single)) == []
    # Only rank 0 wrote: one document, no leftovers.
    assert sorted(p.name for p in (tmp_path / ZOO.stem).iterdir()) == ["audit.json"]


def test_an_interrupted_distributed_audit_resumes_in_one_process_and_under_torchrun(
    single, tmp_path
):
    partial = tmp_path / ZOO.stem / PARTIAL
    for resume in (_torchrun(tmp_path), [sys.executable, *_audit(tmp_path)]):
        process = subprocess.Popen(
            _torchrun(tmp_path),
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 240
        while len(list(partial.glob("*.pt"))) < 3 and process.poll() is None:
            assert time.time() < deadline, "no unit was finished"
            time.sleep(0.05)
        assert process.poll() is None, "the audit finished before it could be stopped"
        _kill_torchrun(process)
        assert not (tmp_path / ZOO.stem / "audit.json").exists()
        done = subprocess.run(resume, cwd=ROOT, env=_environment(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not partial.exists()
        assert differences(comparable(_document(tmp_path)), comparable(single)) == []
        (tmp_path / ZOO.stem / "audit.json").unlink()


def test_a_locked_folder_refuses_every_process_of_the_group(tmp_path):
    """Rank 0 alone locks the folder; when another audit holds it (this process here), every
    process of the group stops with status 2 at once instead of waiting for rank 0, the
    refusal is said once, and the folder is left as it was."""
    folder = tmp_path / ZOO.stem
    folder.mkdir()
    handle = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(handle, json.dumps({"pid": os.getpid()}).encode())
        done = subprocess.run(
            _torchrun(tmp_path),
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.close(handle)
    assert done.stderr.count(f"error: {folder} is in use by another audit (pid {os.getpid()})") == 1
    # torchrun reports each worker's status; both are bad input.
    statuses = re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", done.stderr, re.M)
    assert statuses == ["2", "2"], done.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == [LOCK]


SUITE = """
preset = "quick"
[epsilons]
linf = [0.05]
[[attacks]]
kind = "pgd"
label = "pgd-ce"
num_steps = 2
[[attacks]]
kind = "square"
label = "square"
num_queries = 60
[sweep]
attack = "pgd-ce"
num_points = 2
independent_samples = 20
[options]
batch_size = 8
"""


def test_library_attacks_give_the_same_batches_in_any_number_of_processes(tmp_path):
    """Square (pyautoattack's code, drawing per batch) on several batches of the suite's
    size: shared out between two processes, the same outcomes as one process."""
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    flags = ["--suite", str(suite), "--no-flatness", "--norms", "linf"]
    one, two = tmp_path / "one", tmp_path / "two"
    for command, out in (
        ([sys.executable], one),
        ([TORCHRUN, "--standalone", "--nproc_per_node=2"], two),
    ):
        done = subprocess.run(
            [*command, *_audit(out), *flags],
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    single, spread = _document(one), _document(two)
    (square,) = [a for a in single["robustness"]["norms"][0]["attacks"] if a["label"] == "square"]
    assert square["attempted"][0] > 2 * 8  # more than two batches, so both processes ran some
    assert differences(comparable(spread), comparable(single)) == []

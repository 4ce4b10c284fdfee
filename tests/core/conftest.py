"""Shared fixtures: real audit documents (and a baseline) written by the audit's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from document_helpers import CHECKPOINT, NUM_SAMPLES, ROOT


def _audit(out: Path, *flags: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "analysis.audit",
        str(CHECKPOINT),
        "--preset",
        "quick",
        "--num-samples",
        str(NUM_SAMPLES),
        "--out",
        str(out),
        "--quiet",
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="session")
def documents(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Two real audits, run side by side: with flatness and two epsilons per norm, and without
    flatness."""
    root = tmp_path_factory.mktemp("reader")
    runs = {
        "flatness": _audit(
            root / "flatness",
            "--epsilons",
            "linf=0.05,0.1;l2=0.3,0.5",
            "--flatness-samples",
            "40",
        ),
        "no_flatness": _audit(root / "no_flatness", "--no-flatness"),
    }
    paths = {}
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        paths[name] = root / name / CHECKPOINT.stem / "audit.json"
    return paths


@pytest.fixture(scope="session")
def baseline(documents: dict[str, Path]) -> Path:
    target = documents["flatness"].parent / "baseline.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.gate",
            str(documents["flatness"]),
            str(target),
            "--update-baseline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return target

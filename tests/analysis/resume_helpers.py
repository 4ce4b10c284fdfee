"""Helpers shared by the tests of resuming interrupted audits: the audited checkpoint, the
command that audits it, and a lock held on a folder."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from checkpoints.train import ZOO_DIR

ZOO = ZOO_DIR / "digits-mlp-qsd.pt"
ROOT = Path(__file__).resolve().parents[2]


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


def _hold(path: Path) -> int:
    """Lock ``path`` as a running audit does, from this process, with this process's pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(handle, 0)
    os.write(handle, json.dumps({"pid": os.getpid()}).encode())
    return handle

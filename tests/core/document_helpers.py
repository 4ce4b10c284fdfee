"""Helpers shared by the tests of the typed reader of ``audit.json``: the audit whose documents
they read (run by the fixtures in conftest.py), and the comparison of a document's JSON with
what the reader makes of it."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "zoo" / "digits-mlp-dropout.pt"
NUM_SAMPLES = 60


def _same(raw: Any, typed: Any, where: str) -> None:
    """Every leaf of the JSON ``raw`` equals the typed value reached by the same path."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            if dataclasses.is_dataclass(typed):
                names = {f.name for f in dataclasses.fields(typed)} - {"extra"}
                child = getattr(typed, key) if key in names else typed.extra[key]
            else:
                assert isinstance(typed, Mapping), where
                child = typed[key]
            _same(value, child, f"{where}.{key}")
        if isinstance(typed, Mapping):
            assert len(typed) == len(raw), where
    elif isinstance(raw, list):
        assert isinstance(typed, tuple), where
        assert len(typed) == len(raw), where
        for i, (value, child) in enumerate(zip(raw, typed, strict=True)):
            _same(value, child, f"{where}[{i}]")
    elif isinstance(raw, str) and isinstance(typed, tuple):
        assert re.fullmatch("[01]*", raw), where
        assert all(isinstance(b, bool) for b in typed), where
        assert "".join("1" if b else "0" for b in typed) == raw, where
    elif isinstance(raw, str) and isinstance(typed, float):
        expected = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[raw]
        assert (math.isnan(typed) and math.isnan(expected)) or typed == expected, where
    elif isinstance(raw, bool):
        assert typed is raw, where
    elif isinstance(raw, int | float):
        assert typed == raw and not isinstance(typed, bool), where
        if isinstance(raw, float):
            assert isinstance(typed, float), where
    else:
        assert typed == raw, where
        assert type(typed) is type(raw), where


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())

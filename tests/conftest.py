"""Shared test configuration: the reference data folder comes from $ROBAUDIT_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference data folder; tests that need it skip with a reason when it is absent."""
    value = os.environ.get("ROBAUDIT_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("reference data not available: set ROBAUDIT_DATA to the shared data folder")
    return Path(value)

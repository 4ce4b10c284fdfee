"""Shared fixtures: a small, fast audit of a zoo model."""

from __future__ import annotations

import pytest
from audit_helpers import audit_document, quick_config


@pytest.fixture(scope="session")
def quick_document() -> dict:
    """A quick audit (with flatness) of a digits zoo model."""
    return audit_document("digits-mlp-dropout", quick_config(flatness=True))

"""The audit pipeline: ``audit_model`` for a model in Python, ``python -m analysis.audit`` for
checkpoint files, the red-flag checks and the CI gate."""

from __future__ import annotations

from typing import Any

__all__ = ["audit_model"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``python -m analysis.audit`` imports this package before it runs
    # its module as __main__, which must not be imported twice.
    if name == "audit_model":
        from analysis.api import audit_model

        return audit_model
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")

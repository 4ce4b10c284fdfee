"""Helpers that build small, fast audits of zoo models."""

from __future__ import annotations

from pathlib import Path

import torch

from analysis.config import AuditConfig, build_suite, flatness_config
from analysis.documentdiff import without_timings as _without_timings
from analysis.pipeline import evaluation_set, run_audit
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from core.document import AuditResult


def quick_config(num_samples: int = 120, flatness: bool = False, seed: int = 0) -> AuditConfig:
    suite = build_suite("quick", "digits")
    return AuditConfig(
        suite=suite,
        flatness=flatness_config("quick", 128) if flatness else None,
        num_samples=num_samples,
        flatness_samples=64,
        batch_size=256,
        seed=seed,
    )


def audit_document(name, config: AuditConfig, model=None) -> dict:
    """Audit the zoo model ``name`` (or the checkpoint at a path), optionally wrapped: the
    document as JSON."""
    path = name if isinstance(name, Path) else ZOO_DIR / f"{name}.pt"
    loaded = load_checkpoint(path)
    if model is not None:
        from dataclasses import replace

        loaded = replace(loaded, model=model(loaded.model).eval())
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    return run_audit(loaded, evaluation, config, device=torch.device("cpu")).to_dict()


def without_timings(document: dict | AuditResult) -> dict:
    """The document (of a result, its JSON) less what differs between two runs of one
    command (``analysis.documentdiff.without_timings``)."""
    if isinstance(document, AuditResult):
        document = document.to_dict()
    return _without_timings(document)

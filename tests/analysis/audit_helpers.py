"""Helpers that build small, fast audits of zoo models."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from analysis.audit import evaluation_set, run_audit
from analysis.config import AuditConfig, build_suite, flatness_config
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR


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
    """Audit the zoo model ``name`` (or the checkpoint at a path), optionally wrapped."""
    path = name if isinstance(name, Path) else ZOO_DIR / f"{name}.pt"
    loaded = load_checkpoint(path)
    if model is not None:
        from dataclasses import replace

        loaded = replace(loaded, model=model(loaded.model).eval())
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    return run_audit(loaded, evaluation, config, device=torch.device("cpu"))


def without_timings(document: dict) -> dict:
    """The document less what differs between two runs of one command: clock times and the
    memory measurements behind the batch sizes."""
    document = copy.deepcopy(document)
    for key in ("started", "finished"):
        document["provenance"].pop(key)
    # What memory the machine had and one step took, like the times, varies between runs.
    for choice in document["provenance"]["batch_sizes"].values():
        if isinstance(choice, dict):
            for key in ("per_sample_bytes", "fixed_bytes", "available_bytes"):
                choice.pop(key)
    document["robustness"].pop("wall_time")
    for norm in document["robustness"]["norms"]:
        for attack in norm["attacks"]:
            attack.pop("wall_time")
    return document

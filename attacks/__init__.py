"""Adversarial attacks for auditing robustness: one call, many epsilons, per-sample outcomes.

A model is any ``torch.nn.Module`` mapping inputs in the bounds (normally ``[0, 1]`` pixels,
normalisation inside the model) to logits. Every attack takes ``(model, x, y, epsilons)``, one
epsilon or an ascending list of them, and returns a frozen ``AttackResult`` (one row per
epsilon); ``run_suite`` runs a whole ``SuiteConfig`` (see ``preset``) and returns a
``SuiteResult``, which ``analysis.robustness`` writes into the document's records.
"""

import attacks.kinds  # noqa: F401  (registers every attack kind before the registry is read)
from attacks.apgd import apgd, autoattack
from attacks.backends import BACKENDS
from attacks.evaluator import ChunkedModel
from attacks.fab import fab
from attacks.fgsm import fgsm
from attacks.losses import margin
from attacks.noise import random_noise
from attacks.pgd import TARGET_MODES, pgd, pgd_targeted
from attacks.presets import (
    STANDARD_EPSILONS,
    AttackSpec,
    SuiteConfig,
    SweepConfig,
    preset,
)
from attacks.registry import Family, list_attacks
from attacks.result import AttackResult, gradient_stats
from attacks.square import square
from attacks.suite import (
    ATTACKS,
    AttackOutcome,
    NormOutcome,
    SuiteResult,
    run_suite,
)
from attacks.threat import Bounds, Epsilons, Norm, check_epsilons, geometry
from attacks.worstcase import robust_after

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "STANDARD_EPSILONS",
    "TARGET_MODES",
    "AttackOutcome",
    "AttackResult",
    "AttackSpec",
    "Bounds",
    "ChunkedModel",
    "Epsilons",
    "Family",
    "Norm",
    "NormOutcome",
    "SuiteConfig",
    "SuiteResult",
    "SweepConfig",
    "apgd",
    "autoattack",
    "check_epsilons",
    "fab",
    "fgsm",
    "geometry",
    "gradient_stats",
    "list_attacks",
    "margin",
    "pgd",
    "pgd_targeted",
    "preset",
    "random_noise",
    "robust_after",
    "run_suite",
    "square",
]

"""Gradient-masking red flags: each check is one function from the evidence to one finding.

The checks follow Athalye et al. (2018, section 3.1), Carlini et al. (2019) and the
indicators of attack failure of Pintor et al. (2022), and AutoAttack's warnings. Comparisons
between attacks are paired: in the suite every attack runs only on the samples that the
attacks before it left robust, so "attack B broke samples that A missed" is a count of
discordant samples, tested with an exact one-sided binomial test against a small tolerated
rate. Noise on 1000 samples therefore raises nothing.

Adding a check: declare it in ``core/checks.py`` (its title, what it measures, the numbers it
compares against and when it fails in words formatted from them, its sentences and remedy, the
keys of its evidence, read also by the torch-free report),
write a function ``(Evidence) -> Judged`` decorated with ``@check(code)`` in the module of
the evidence it reads, document it in the table of the README, and give it a renderer of its
evidence (in ``reports/*evidence.py``, registered with ``reports.evidenceblocks.renders``).

The shared plumbing (``Evidence``, ``Judged``, the registry) is in ``analysis.findings``; a
check returns the document's record, ``core.document.Finding``. The checks are grouped by what
they read: ``analysis.cleanchecks`` (the clean accuracy), ``analysis.comparechecks`` (attacks
against one another), ``analysis.gradientchecks`` (gradients and non-finite values),
``analysis.modelchecks`` (the model's behaviour under probes) and ``analysis.runchecks`` (the
attack runs themselves). This module imports them in that order, which is the order the checks
run and are reported in.
"""

from __future__ import annotations

# The checks register on import, and run (and appear in the document) in this order.
from analysis.cleanchecks import (
    MATERIAL_ACCURACY_GAP,
    MATERIAL_CONVENTION_GAIN,
    MATERIAL_SAMPLES,
    low_clean_accuracy,
)
from analysis.comparechecks import (
    GRADIENT,
    PAIRWISE_CHECKS,
    margin_loss_beats_cross_entropy,
    not_monotonic,
    unbounded_attack,
)
from analysis.findings import CHECK_FUNCTIONS, Check, Evidence, Finding, Judged, check
from analysis.gradientchecks import (
    FD_MATERIAL_RATE,
    FD_MINIMUM,
    FD_TOLERATED_RATE,
    gradient_disagrees_with_finite_differences,
    nonfinite,
    vanishing_gradients,
)
from analysis.modelchecks import (
    batch_dependent_outputs,
    probability_outputs,
    stochastic_model,
    train_mode,
)
from analysis.runchecks import attack_failed, not_converged, silent_success
from core.checks import ALPHA, INCOMPLETE, verdict
from core.document import FindingStatus

__all__ = [
    "ALPHA",
    "CHECK_FUNCTIONS",
    "FD_MATERIAL_RATE",
    "FD_MINIMUM",
    "FD_TOLERATED_RATE",
    "GRADIENT",
    "INCOMPLETE",
    "MATERIAL_ACCURACY_GAP",
    "MATERIAL_CONVENTION_GAIN",
    "MATERIAL_SAMPLES",
    "PAIRWISE_CHECKS",
    "Check",
    "Evidence",
    "Finding",
    "Judged",
    "FindingStatus",
    "attack_failed",
    "batch_dependent_outputs",
    "check",
    "gradient_disagrees_with_finite_differences",
    "low_clean_accuracy",
    "margin_loss_beats_cross_entropy",
    "nonfinite",
    "not_converged",
    "not_monotonic",
    "probability_outputs",
    "run_checks",
    "silent_success",
    "stochastic_model",
    "train_mode",
    "unbounded_attack",
    "vanishing_gradients",
    "verdict",
]


def run_checks(evidence: Evidence) -> list[Finding]:
    """Every registered check, in registration order."""
    return [function(evidence) for function in CHECK_FUNCTIONS.values()]

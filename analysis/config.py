"""What an audit runs: the attack suite (preset, TOML file, flags) and the flatness budget.

This module holds the audit's configuration and the flatness estimators' budgets; the rest
are its parts: ``analysis.suites`` (the suite from a preset or a suite file, adjusted by
flags; the suite file's format is described there), ``analysis.epsilons`` (``--epsilons``)
and ``analysis.cost`` (what a suite may cost).

Batch sizes: three different numbers go by that name.

- The attacks' batch: the samples an attack works on together; its random draws are per
  batch, so it is part of the result. ``AuditConfig.batch_size`` (from the suite,
  ``DEFAULT_BATCH_SIZE`` unless a suite file or a ``SuiteConfig`` says otherwise), which the
  audit writes into ``SuiteConfig.batch_size`` of the suite it runs; the probes use it too
  (``Probes.batch_size`` in the document).
- The evaluation chunk: the samples the model evaluates at once within the attacks' batch
  (and in the probes and the activation statistics). It bounds memory and changes no result.
  ``--batch-size`` and ``audit_model(batch_size=)`` ask for it as
  ``AuditConfig.model_batch_size`` (None: the largest that fits, measured); what the audit
  chose is ``BatchSizes.attacks`` in the document (``BatchSizes.requested`` is what was asked).
- The flatness pass: the samples each flatness estimator's pass takes, chosen like the chunk
  (``analysis.batching.flatness_batch``, at most ``FLATNESS_BATCH_LIMIT``) and recorded as
  ``BatchSizes.flatness``. ``FlatnessConfig.batch_size`` is that pass for a caller of
  ``flatness.measure``; in an audit ``analysis.batching.measure_fitting`` replaces it with
  the chosen size, so the value ``flatness_config`` puts there is only recorded (as
  ``provenance.config.flatness.batch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.batching import FLATNESS_BATCH_LIMIT
from analysis.cost import COST_WARNING_FACTOR, cost_warning, passes_per_sample
from analysis.epsilons import PER_NORM_SYNTAX, BareEpsilons, parse_epsilons
from analysis.suites import DEFAULT_BATCH_SIZE, PRESETS, build_suite, check_suite
from attacks import SuiteConfig
from core.flatrecords import MEASURES
from flatness import FlatnessConfig

__all__ = [
    "PRESETS",
    "COST_WARNING_FACTOR",
    "DEFAULT_BATCH_SIZE",
    "PER_NORM_SYNTAX",
    "AuditConfig",
    "BareEpsilons",
    "build_audit_config",
    "build_suite",
    "check_suite",
    "cost_warning",
    "passes_per_sample",
    "active_flatness_config",
    "flatness_config",
    "parse_epsilons",
]

EOT_SAMPLES = 8  # forward passes per gradient when the model turns out to be stochastic


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit needs besides the model and data.

    Attributes:
        suite: the attack suite.
        flatness: the flatness estimators, or None to skip them.
        num_samples: evaluation samples (None: the whole test split).
        flatness_samples: samples the flatness estimators use (the first of the evaluation set).
        batch_size: the attacks' batch (see the module docstring): the batch every attack
            works on (its random draws are per batch) and the probes use; it replaces the
            suite's own.
        model_batch_size: the evaluation chunk (see the module docstring), ``--batch-size``:
            samples the model evaluates at once (None: the largest that fits, measured; see
            ``analysis.batching``); it bounds memory and changes no result.
        seed: the seed of every random choice.
        examples_per_attack: adversarial examples kept per attack and epsilon.
    """

    suite: SuiteConfig
    flatness: FlatnessConfig | None
    num_samples: int | None = 1000
    flatness_samples: int = 500
    batch_size: int = DEFAULT_BATCH_SIZE
    model_batch_size: int | None = None
    seed: int = 0
    examples_per_attack: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite.to_dict(),
            "flatness": None
            if self.flatness is None
            else {
                "measures": [str(m) for m in self.flatness.measures],
                "batch_size": self.flatness.batch_size,
                "mode": str(self.flatness.mode),
                "options": self.flatness.options,
            },
            "num_samples": self.num_samples,
            "flatness_samples": self.flatness_samples,
            "batch_size": self.batch_size,
            "model_batch_size": self.model_batch_size,
            "seed": self.seed,
            "examples_per_attack": self.examples_per_attack,
        }


def build_audit_config(
    suite: SuiteConfig,
    preset_name: str,
    *,
    flatness: bool,
    num_samples: int | None,
    flatness_samples: int,
    model_batch_size: int | None,
    seed: int,
) -> AuditConfig:
    """The audit's configuration from the user's choices, the suite already built from them:
    ``python -m analysis.audit``'s flags and ``audit_model``'s keywords both come here.

    The attacks' batch is the suite's (a preset's, a suite file's or the caller's), else
    ``DEFAULT_BATCH_SIZE``; the flatness estimators are matched to ``preset_name``, or None
    without ``flatness``. ``model_batch_size`` is ``--batch-size`` / ``audit_model(batch_size=)``:
    only the chunk the model evaluates at once.
    """
    batch_size = DEFAULT_BATCH_SIZE if suite.batch_size is None else suite.batch_size
    return AuditConfig(
        suite=suite,
        flatness=flatness_config(preset_name, batch_size) if flatness else None,
        num_samples=num_samples,
        flatness_samples=flatness_samples,
        batch_size=batch_size,
        model_batch_size=model_batch_size,
        seed=seed,
    )


ACTIVE_MEASURES = ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace")
"""The flatness measures repeated with the dropout-family layers active."""


def active_flatness_config(config: FlatnessConfig) -> FlatnessConfig:
    """``config``'s Fisher-Rao norms and Hessian trace, with the dropout-family layers active.

    Train mode with batch norm frozen (``flatness.Mode.TRAIN``), with the same targets and
    budgets as in eval mode. One dropout draw per sample and draw: the estimators average over
    their draws (each a mini-batch with its own dropout draws and probes), so the dropout is
    Monte-Carlo averaged and its spread is part of the standard error.
    """
    measures = tuple(m for m in ACTIVE_MEASURES if m in {str(n) for n in config.measures})
    return FlatnessConfig(
        measures=measures,
        batch_size=config.batch_size,
        mode="train",
        num_mc_samples=1,
        options={m: config.options[m] for m in measures if m in config.options},
    )


MINIBATCH_SIZE = 64
"""Samples per draw of the doubly stochastic estimators (the Fisher-Rao norms, the Hessian
trace): a fresh mini-batch for every observation instead of a pass over all flatness samples."""


def flatness_config(preset_name: str, batch_size: int) -> FlatnessConfig:
    """Flatness estimators matched to the attack preset, each with a target precision and a
    budget (it stops at whichever comes first, and says which).

    The Fisher-Rao norms and the Hessian trace draw a fresh mini-batch of ``MINIBATCH_SIZE``
    samples per observation (doubly stochastic), to a relative standard error of 2 % (5 % in
    ``quick``) or their budget. The top eigenvalues run Lanczos on all flatness samples until
    their residual bounds are below 10⁻³ of the values. The spectral density and the loss
    landscapes are pictures: they use samples of their own (64 to 128 samples; every point
    or step is a pass over them). The same budgets apply with the dropout-family layers
    active (``active_flatness_config``).

    ``batch_size`` is the attacks' batch; ``FlatnessConfig.batch_size`` is set to it, at most
    ``FLATNESS_BATCH_LIMIT``. An audit runs the estimators at the flatness pass it chose
    instead (``analysis.batching.measure_fitting``), so there the value is only recorded.
    """
    quick = preset_name == "quick"
    drawn = {"minibatch_size": MINIBATCH_SIZE, "rel_tol": 0.05 if quick else 0.02}
    return FlatnessConfig(
        measures=MEASURES,
        batch_size=min(batch_size, FLATNESS_BATCH_LIMIT),
        options={
            "fisher_rao_empirical": {**drawn, "max_draws": 8 if quick else 16},
            "fisher_rao_model": {**drawn, "max_draws": 8 if quick else 16},
            "hessian_trace": {**drawn, "max_probes": 40 if quick else 100},
            "hessian_eigenvalues": {
                "num_eigenvalues": 3,
                "rel_tol": 1e-3,
                "max_iterations": 20 if quick else 60,
            },
            "spectral_density": {
                "max_runs": 2 if quick else 3,
                "min_runs": 2,
                "rel_tol": 0.05,
                "num_steps": 20 if quick else 40,
                "num_grid_points": 200,
                "sample_size": 64,
            },
            "landscape_1d": {"num_points": 11 if quick else 21, "sample_size": 128},
            "landscape_2d": {"num_points": 7 if quick else 15, "sample_size": 64},
            "epsilon_sharpness": {"num_steps": 5 if quick else 10},
        },
    )

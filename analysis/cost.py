"""What a suite may cost: the most forward passes of one sample each attack may take, and a
warning for a suite far beyond the standard preset."""

from __future__ import annotations

from attacks import AttackSpec, SuiteConfig, preset, registry
from core.document import AUTOATTACK_VERSIONS

COST_WARNING_FACTOR = 20.0
"""A suite that may take more than this many times the standard preset's forward passes per
sample runs with a warning that says how many (`cost_warning`)."""

# pyautoattack's ensembles, in forward (and backward) passes of one sample: standard is APGD-CE
# (100 steps), APGD-T and FAB-T (9 targets of 100 steps) and Square (5,000 queries); plus
# adds five restarts of APGD-CE, APGD-DLR and FAB; rand is APGD-CE and APGD-DLR with 20 EOT
# draws per step (in AUTOATTACK_VERSIONS' order).
_AUTOATTACK_PASSES = dict(zip(AUTOATTACK_VERSIONS, (6_900.0, 8_300.0, 4_000.0), strict=True))


def _attack_passes(spec: AttackSpec, num_classes: int, eot_samples: int) -> float:
    """The most forward passes (with their backward passes) of one sample that one run of
    ``spec`` at one epsilon takes: every step, restart, target, query and EOT draw."""
    attack = registry.get(spec.kind)
    params = {**attack.defaults, **spec.params}
    # The suite's EOT draws, unless the attack sets its own (as the suite passes them).
    draws = spec.params.get("eot_samples", eot_samples) if attack.eot else 1
    if params.get("backend", "native") != "native":
        draws = 1  # the reference libraries compute one gradient per step
    wrong = max(num_classes - 1, 1)
    if spec.kind == "fgsm":
        return float(draws)
    if spec.kind in ("pgd", "pgd-t"):
        targets = 1
        if params.get("target_mode") == "all":
            targets = wrong
        elif params.get("target_mode") == "top":
            targets = min(params.get("num_target_classes") or wrong, wrong)
        return float(params["num_steps"] * params["num_restarts"] * draws * targets)
    if spec.kind == "apgd":
        targets = min(params["num_target_classes"], wrong) if params["targeted"] else 1
        return float(params["num_steps"] * params["num_restarts"] * targets * draws)
    if spec.kind == "fab":
        targets = min(params["num_target_classes"], wrong) if params["targeted"] else 1
        return float(params["num_steps"] * params["num_restarts"] * targets)
    if spec.kind == "square":
        return float(params["num_queries"] * params["num_restarts"])
    if spec.kind == "noise":
        return float(params["num_draws"])
    if spec.kind == "autoattack":
        return _AUTOATTACK_PASSES[params["version"]]
    raise ValueError(f"no cost estimate for attack kind {spec.kind!r}")


def passes_per_sample(suite: SuiteConfig, num_classes: int, num_samples: int) -> dict[str, float]:
    """The most forward passes (each with its backward pass for a gradient attack) of one
    evaluated sample that each attack of ``suite`` and its sweep may take.

    The worst case: every sample attacked at every epsilon of every norm by every attack, for
    all its steps, restarts, targets, queries and EOT draws. Early stopping and the worst case
    over attacks (a broken sample is not attacked again) only save.

    Args:
        suite: the suite.
        num_classes: the model's classes (the targets of a targeted attack).
        num_samples: the evaluation samples (the independent sweep attacks a subsample).

    Returns:
        Per attack label (and ``"sweep"``), passes per evaluated sample.
    """
    per_norm = {norm: len(values) for norm, values in suite.epsilons.items()}
    runs = sum(per_norm.values())
    costs = {
        spec.label: runs * _attack_passes(spec, num_classes, suite.eot_samples)
        for spec in suite.attacks
    }
    if suite.sweep is not None:
        points = suite.sweep.num_points + int(suite.sweep.unbounded)
        share = min(suite.sweep.independent_samples, num_samples) / max(num_samples, 1)
        one = _attack_passes(suite.sweep.attack, num_classes, suite.eot_samples)
        costs["sweep"] = len(per_norm) * points * one * (1 + share)
    return costs


def cost_warning(suite: SuiteConfig, num_classes: int, num_samples: int) -> str | None:
    """A warning for a suite that may take more than ``COST_WARNING_FACTOR`` times the
    standard preset's passes per sample (None otherwise), with the estimate: the suite's
    values are each within their bounds, but together they may run for days."""
    costs = passes_per_sample(suite, num_classes, num_samples)
    standard = sum(
        passes_per_sample(preset("standard", "cifar10"), num_classes, num_samples).values()
    )
    total = sum(costs.values())
    factor = total / standard
    if factor <= COST_WARNING_FACTOR:
        return None
    largest = max(costs, key=costs.__getitem__)
    return (
        f"the suite may take up to {total:,.0f} passes of the model per sample (a forward "
        f"pass, and a backward one for a gradient attack), {total * num_samples:,.0f} for "
        f"the {num_samples} samples (most in {largest}: {costs[largest]:,.0f} per sample): "
        f"{factor:,.0f} times the standard preset's {standard:,.0f}, so expect it to run up to "
        f"{factor:,.0f} times as long"
    )

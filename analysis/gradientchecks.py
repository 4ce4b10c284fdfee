"""The checks of the model's gradients: vanishing input gradients, non-finite logits or
gradients (clean or under attack), and input gradients that disagree with finite
differences."""

from __future__ import annotations

from typing import Any

import torch

from analysis.findings import Evidence, Judged, check, grade
from attacks import AttackOutcome, SuiteResult
from core.checks import ALPHA, CHECKS, VANISHING_THRESHOLD
from core.document import FindingStatus
from core.stats import binomial_tail


def _gradient_attacks(suite: SuiteResult) -> list[AttackOutcome]:
    return [
        r
        for outcome in suite.norms
        for r in (*outcome.attacks, outcome.sweep)
        if r is not None and r.result is not None and r.result.gradient_stats is not None
    ]


def _gradient_shares(*populations: tuple[float, float | None, int, str], threshold: float) -> str:
    """``clean samples: 97.0 % of 450 input gradients exactly zero, 97.1 % below 1e-10;
    attacks' first steps: ...``, one clause per population that has gradients."""
    parts = []
    for zero, below, count, name in populations:
        if count == 0:
            continue
        shares = f"{zero:.1%} of {count} input gradients exactly zero"
        if below is not None:
            shares += f", {below:.1%} below {threshold:g}"
        parts.append(f"{name}: {shares}")
    return "; ".join(parts) if parts else "no input gradient was measured"


_VANISHING = CHECKS["vanishing-gradients"].thresholds


@check("vanishing-gradients")
def vanishing_gradients(evidence: Evidence) -> Judged:
    if evidence.probes.input_gradient_error:
        # The model raised when its input required grad: nothing was measured, and every
        # gradient attack will raise too (attack-failed names them).
        return Judged(
            FindingStatus.NOT_APPLICABLE,
            {
                "input_gradient_exists": False,
                "reason": evidence.probes.input_gradient_note,
                "error": evidence.probes.input_gradient_error,
            },
            f"input gradient not measurable: the model raised "
            f"{evidence.probes.input_gradient_error} when its input requires grad",
            remedy="Fix the model so that it runs on an input that requires grad (every "
            "gradient attack needs one), or attack it with gradient-free attacks and report those",
        )
    if not evidence.probes.input_gradient_exists:
        return Judged(
            FindingStatus.FAIL,
            {"input_gradient_exists": False, "reason": evidence.probes.input_gradient_note},
            f"the input gradient does not exist: {evidence.probes.input_gradient_note}",
            remedy="The model's output does not depend differentiably on its input, so every "
            "gradient attack is blind: attack it with BPDA (a differentiable approximation of "
            "the cut operation) or gradient-free attacks, and report those",
        )
    suite = evidence.suite
    attacks = _gradient_attacks(suite) if suite else []
    norms = [r.result.first_grad_norm.flatten() for r in attacks]  # type: ignore[union-attr]
    values = torch.cat(norms) if norms else torch.empty(0, device="cpu")
    values = values[~torch.isnan(values)]
    clean_zero = evidence.probes.clean_zero_gradient_fraction
    assert clean_zero is not None  # probe_model measures every field (a 1.0 document lacks some)
    threshold = (
        attacks[0].result.gradient_stats.vanishing_threshold  # type: ignore[union-attr]
        if attacks
        else VANISHING_THRESHOLD
    )
    attack_zero = float((values == 0).double().mean()) if values.numel() else 0.0
    vanishing = float((values < threshold).double().mean()) if values.numel() else 0.0
    # The clean samples' gradients are one population, the attacks' first gradients another:
    # each is described by its own two shares, so that "below the threshold" always includes
    # the exact zeros of the same population.
    clean_norms = torch.tensor(
        evidence.probes.clean_gradient_norms, dtype=torch.float64, device="cpu"
    )
    clean_vanishing = (
        float((clean_norms < threshold).double().mean()) if clean_norms.numel() else None
    )
    zero = max(attack_zero, clean_zero)
    # Exact zeros (a saturated softmax underflowing, a quantised input) starve every gradient
    # attack. Tiny but non-zero gradients still carry a direction for sign and normalised
    # steps, so they only warn when they are the rule.
    if zero > _VANISHING["fail_zero"]:
        status = FindingStatus.FAIL
    elif zero > _VANISHING["warn_zero"] or vanishing > _VANISHING["warn_vanishing"]:
        status = FindingStatus.WARN
    else:
        status = FindingStatus.PASS
    return Judged(
        status,
        {
            "input_gradient_exists": True,
            "zero_fraction": zero,
            "clean_zero_fraction": clean_zero,
            "attack_zero_fraction": attack_zero,
            "vanishing_fraction": vanishing,
            "clean_vanishing_fraction": clean_vanishing,
            "threshold": threshold,
            "measured": int(values.numel()),
            "clean_measured": int(clean_norms.numel()),
        },
        _gradient_shares(
            (clean_zero, clean_vanishing, int(clean_norms.numel()), "clean samples"),
            (attack_zero, vanishing, int(values.numel()), "attacks' first steps"),
            threshold=threshold,
        ),
    )


@check("non-finite-values")
def nonfinite(evidence: Evidence) -> Judged:
    """NaN or Inf in the model's logits or input gradients, clean or under attack.

    Counts samples (clean: the probes' pass and the suite's clean pass; under attack: samples
    whose judged example had non-finite logits, per attack, norm and epsilon) and sample
    evaluations (every pass of every attack, black-box ones included). Such a sample has no
    prediction: it is not clean-correct, and no attack counts it as broken (so a sample that
    only an attack's NaN "broke" still counts as robust), which makes every accuracy of the
    audit unreliable: a reliability failure.
    """
    probes = evidence.probes
    attack_logits = attack_grads = 0
    clean_samples = attack_samples = 0
    per_attack: dict[str, dict[str, Any]] = {}
    suite = evidence.suite
    if suite is not None:
        clean_samples = int(suite.clean_nonfinite.sum())
        for gradient_attack in _gradient_attacks(suite):
            stats = gradient_attack.result.gradient_stats  # type: ignore[union-attr]
            attack_grads += stats.nonfinite_gradients  # type: ignore[union-attr]
        hit = torch.zeros(suite.num_samples, dtype=torch.bool, device="cpu")
        for outcome in suite.norms:
            stages: list[tuple[AttackOutcome | None, str]] = [(r, "") for r in outcome.attacks]
            stages += [(outcome.sweep, " (sweep)"), (outcome.independent_sweep, " (independent)")]
            for attack, stage in stages:
                if attack is None:
                    continue
                attack_logits += attack.nonfinite_evaluations
                columns = attack.nonfinite.cpu()
                hit |= columns.any(0)
                if attack.nonfinite_evaluations or bool(columns.any()):
                    per_attack[f"{attack.label}/{outcome.norm.value}{stage}"] = {
                        "epsilons": list(attack.epsilons),
                        "samples": [int(v) for v in columns.sum(1)],
                        "evaluations": attack.nonfinite_evaluations,
                    }
        attack_samples = int(hit.sum())
    rows: dict[str, Any] = {
        "clean_logits": probes.nonfinite_logits,
        "clean_gradients": probes.nonfinite_gradients,
        "clean_samples": clean_samples,
        "attack_samples": attack_samples,
        "attack_logits": attack_logits,
        "attack_gradients": attack_grads,
    }
    bad = sum(rows.values())
    rows["attacks"] = per_attack
    if bad:
        parts = []
        assert probes.nonfinite_logits is not None  # probe_model measures every field
        clean = max(probes.nonfinite_logits, clean_samples)
        if clean:
            total = f" of {suite.num_samples}" if suite is not None else ""
            parts.append(f"{clean}{total} samples have NaN or Inf clean logits")
        if probes.nonfinite_gradients:
            parts.append(f"{probes.nonfinite_gradients} have non-finite clean input gradients")
        if attack_samples:
            names = ", ".join(k for k, v in sorted(per_attack.items()) if any(v["samples"]))
            parts.append(
                f"{attack_samples} samples had NaN or Inf logits at the example of {names}"
            )
        elif attack_logits:
            parts.append(f"{attack_logits} sample evaluations in attacks had NaN or Inf logits")
        if attack_grads:
            parts.append(f"{attack_grads} input gradients under attack were not finite")
        explanation = "; ".join(parts) + (
            "; such samples count as clean errors, and never as broken by an attack"
        )
    else:
        explanation = None
    return Judged(
        FindingStatus.FAIL if bad else FindingStatus.PASS,
        rows,
        explanation,
    )


_FD = CHECKS["gradient-disagrees-with-finite-differences"].thresholds
FD_TOLERATED_RATE = _FD["tolerated_rate"]
"""Pairs an honest network may have disagreeing at every step (``core.checks`` says why)."""
FD_MATERIAL_RATE = _FD["material_rate"]
FD_MINIMUM = int(_FD["minimum"])


@check("gradient-disagrees-with-finite-differences")
def gradient_disagrees_with_finite_differences(evidence: Evidence) -> Judged:
    """The share of sample-direction pairs whose directional derivative disagrees with the
    central, forward and backward finite differences at every step size, against
    ``FD_TOLERATED_RATE`` by an exact one-sided binomial test; graded like the pairwise
    checks (significant and material: at least ``FD_MINIMUM`` pairs and ``FD_MATERIAL_RATE``)."""
    probes = evidence.probes
    if not probes.fd_applicable or probes.fd_informative == 0:
        reason = probes.fd_note if not probes.fd_applicable else "no pair changed measurably"
        return Judged(
            FindingStatus.NOT_APPLICABLE,
            {"reason": reason},
            f"not measured: {reason}",
            remedy="",
        )
    disagreeing, pairs = probes.fd_disagreeing, probes.fd_informative
    # probe_model measures every field (a 1.0 document lacks some).
    assert disagreeing is not None and pairs is not None
    assert probes.fd_steps is not None and probes.fd_step_disagreement is not None
    fraction = disagreeing / pairs
    p_value = binomial_tail(disagreeing, pairs, FD_TOLERATED_RATE)
    status = grade(disagreeing >= FD_MINIMUM, p_value < ALPHA, fraction >= FD_MATERIAL_RATE)
    steps = ", ".join(f"{h:g}" for h in probes.fd_steps)
    per_step = ", ".join(
        f"{h:g}: {v:.1%}" for h, v in zip(probes.fd_steps, probes.fd_step_disagreement, strict=True)
    )
    ratio = probes.fd_median_ratio
    return Judged(
        status,
        {
            "disagreeing": disagreeing,
            "pairs": pairs,
            "disagreement_fraction": fraction,
            "tolerated_rate": FD_TOLERATED_RATE,
            "material_rate": FD_MATERIAL_RATE,
            "p_value": p_value,
            "steps": list(probes.fd_steps),
            "step_disagreement": list(probes.fd_step_disagreement),
            "tolerance": probes.fd_tolerance,
            "precision": probes.fd_precision,
            "nonfinite_pairs": probes.fd_nonfinite,
            "median_ratio": ratio,
        },
        f"{disagreeing} of {pairs} sample-direction pairs ({fraction:.1%}) disagree with "
        f"finite differences at every step ({steps}; {probes.fd_precision}); disagreement per "
        f"step {per_step}"
        + (
            f"; the finite difference is {ratio:.3g} times the gradient's directional "
            "derivative (median)"
            if ratio is not None and status in (FindingStatus.WARN, FindingStatus.FAIL)
            else ""
        ),
    )

"""The diagnosis: which masking mechanism a document's evidence points to.

Read from the findings, the probes, each attack's input-gradient health and the stored
examples' margins, never from the model. The mechanisms are those the checks are tested on
(``analysis/masked.py``): a saturated softmax (cross-entropy gradients exactly zero while the
margin loss still breaks samples: the NormOut thesis' pattern), shattered or missing input
gradients, a backward pass that disagrees with finite differences, randomness, layers left in
train mode, probability outputs, batch-dependent outputs, non-finite values, and attacks that
are merely too weak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.checks import CHECKS as CHECK_SPECS
from core.document import WARN_OR_FAIL, AttackRecord, AuditResult, Finding
from reports import tables

__all__ = ["UNDERFLOW_MARGIN", "Mechanism", "diagnose"]


UNDERFLOW_MARGIN = -math.log(2.0**-149)
"""About 103.3: a logit margin beyond which every other class' float32 softmax is exactly 0,
so the cross-entropy and its input gradient are exactly 0 too."""


@dataclass(frozen=True)
class Mechanism:
    """A mechanism the evidence points to: what was seen, what it means, what to do."""

    title: str
    evidence: tuple[str, ...]
    explanation: str
    remedy: str


def _is_cross_entropy(record: AttackRecord) -> bool:
    params = record.params or {}
    return params.get("loss", "ce") == "ce" and not params.get("target_mode")


def _is_margin(record: AttackRecord) -> bool:
    return (record.params or {}).get("loss") in ("cw", "dlr")


def _zero_share(result: AuditResult, pick: Any) -> tuple[float, list[str]] | None:
    records = [
        (section.norm, r)
        for section in result.robustness.norms
        for r in section.attacks
        if pick(r) and r.gradient_stats is not None
    ]
    if not records:
        return None
    zero = max(r.gradient_stats.zero_fraction for _, r in records)  # type: ignore[union-attr]
    names = sorted({r.label for _, r in records})
    return zero, names


def _rows(finding: Finding | None) -> list[tuple[str, Any]]:
    if finding is None or not finding.evidence:
        return []
    return [(k, v) for k, v in finding.evidence.items() if hasattr(v, "get")]


def _held_margins(result: AuditResult) -> list[float]:
    """Logit margins of stored examples a cross-entropy attack did not fool."""
    out = []
    for section in result.robustness.norms:
        kinds = {r.label: r for r in section.attacks}
        for example in section.examples or ():
            record = kinds.get(example.attack)
            if (
                record is not None
                and _is_cross_entropy(record)
                and not example.fooled
                and example.margin is not None
                and math.isfinite(example.margin)
            ):
                out.append(example.margin)
    return out


def diagnose(result: AuditResult) -> list[Mechanism]:
    """The mechanisms the document's evidence points to, most specific first; empty when no
    check failed or warned."""
    findings = {f.code: f for f in result.findings}
    flagged = {code for code, f in findings.items() if f.status in WARN_OR_FAIL}
    if not flagged:
        return []
    probes = result.probes
    out: list[Mechanism] = []
    ce = _zero_share(result, _is_cross_entropy)
    margin = _zero_share(result, _is_margin)
    if probes is not None and not probes.input_gradient_exists and not probes.input_gradient_error:
        out.append(
            Mechanism(
                "No input gradient: the autograd graph is cut",
                (f"the input gradient does not exist: {probes.input_gradient_note or 'no note'}",),
                "The output does not depend differentiably on the input (detach, a comparison, an "
                "integer cast, a NumPy round trip), so every gradient attack is blind and only "
                "gradient-free attacks measure robustness.",
                "Attack through a differentiable approximation of the cut operation (BPDA) or "
                "with gradient-free attacks, and report those.",
            )
        )
    saturated = (
        "vanishing-gradients" in flagged
        and ({"margin-loss-beats-cross-entropy", "targeted-beats-untargeted"} & flagged)
        and ce is not None
        and ce[0] > 0.05
        and (margin is None or margin[0] < ce[0] / 2)
    )
    if saturated and ce is not None:
        lines = [
            f"up to {ce[0]:.1%} of the first input gradients of the cross-entropy attacks "
            f"({', '.join(ce[1])}) are exactly zero"
            + (
                f", against {margin[0]:.1%} for the margin-loss attacks ({', '.join(margin[1])})"
                if margin is not None
                else ""
            )
        ]
        if probes is not None and probes.clean_zero_gradient_fraction is not None:
            lines.append(
                f"{probes.clean_zero_gradient_fraction:.1%} of the clean samples' cross-entropy "
                "input gradients are exactly zero"
            )
        margins = [m for m in (probes.clean_margins or ()) if math.isfinite(m)] if probes else []
        if margins:
            beyond = sum(m > UNDERFLOW_MARGIN for m in margins)
            lines.append(
                f"{beyond} of {len(margins)} clean logit margins exceed {UNDERFLOW_MARGIN:.1f}, "
                "beyond which every other class' float32 softmax is exactly zero (median "
                f"margin {sorted(margins)[len(margins) // 2]:.3g})"
            )
        for key, row in _rows(findings.get("margin-loss-beats-cross-entropy")):
            lines.append(
                f"{key}: the margin loss alone broke {row.get('only_margin_loss')} samples that "
                f"PGD-CE missed, PGD-CE alone {row.get('only_cross_entropy')} "
                f"(p = {tables.number(row.get('p_value'), 2)})"
            )
        held = _held_margins(result)
        if held:
            lines.append(
                f"stored examples the cross-entropy attacks did not fool have logit margins "
                f"from {min(held):.3g} to {max(held):.3g}"
            )
        out.append(
            Mechanism(
                "Saturated softmax: the cross-entropy gradient underflows to zero",
                tuple(lines),
                "The logits are so large (margins far beyond what float32 can resolve in a "
                "softmax) that the predicted probability rounds to exactly one: the "
                "cross-entropy and its input gradient are exactly zero, so PGD-CE and FGSM "
                "cannot move, while the margin loss, a difference of logits, keeps its gradient "
                "and breaks the samples. This is the NormOut thesis' SpatiotemporalMax pattern: "
                "NormOut without rescaling, trained with plain cross-entropy, inflates the "
                "eval-mode logits.",
                "Report margin-loss (CW/DLR) and multi-target attacks and the reliable worst "
                "case; do not quote PGD-CE alone. To fix the model, bound its margins in "
                "training (label smoothing, as the zoo does) or rescale the logits.",
            )
        )
    elif "vanishing-gradients" in flagged and (
        {"black-box-beats-white-box", "random-search-beats-gradient"} & flagged
    ):
        share = findings["vanishing-gradients"].evidence or {}
        out.append(
            Mechanism(
                "Shattered gradients: zero for every loss",
                (
                    f"{float(share.get('zero_fraction') or 0.0):.1%} of the input gradients "
                    "are exactly zero (of the clean samples' or of the attacks' first steps, "
                    "whichever has more)",
                    "gradient-free attacks (Square, random noise) broke samples the gradient "
                    "attacks left robust",
                ),
                "The gradient is zero almost everywhere whatever the loss (input quantisation, "
                "a step function, a saturated input non-linearity), so gradient attacks see "
                "nothing while gradient-free ones succeed.",
                "Attack with BPDA (a differentiable stand-in for the flat operation) or EOT, "
                "and report the worst case over gradient-free attacks.",
            )
        )
    elif "vanishing-gradients" in flagged:
        out.append(
            Mechanism(
                "Vanishing gradients",
                (findings["vanishing-gradients"].explanation,),
                "Many input gradients are zero or tiny, which starves gradient attacks.",
                findings["vanishing-gradients"].remedy
                or "Use margin-loss and gradient-free attacks.",
            )
        )
    if "gradient-disagrees-with-finite-differences" in flagged:
        finding = findings["gradient-disagrees-with-finite-differences"]
        out.append(
            Mechanism(
                "The backward pass does not describe the function",
                (finding.explanation,),
                "The gradient autograd returns disagrees with finite differences of the same "
                "function: a custom or wrong backward, or a non-differentiable layer, misleads "
                "every gradient attack.",
                finding.remedy or "Use BPDA or gradient-free attacks.",
            )
        )
    for code, title, meaning in (
        (
            "stochastic-model",
            "A random classifier",
            "Repeated passes on the same input differ, so every accuracy is one draw and the "
            "gradients are noisy.",
        ),
        (
            "model-in-train-mode",
            "Layers left in train mode",
            "Dropout or batch norm in training mode at test time makes predictions random.",
        ),
        (
            "probability-outputs",
            "Probabilities instead of logits",
            "A final softmax makes the attacks' cross-entropy apply softmax twice and flattens "
            "its gradients.",
        ),
        (
            "batch-dependent-outputs",
            "Outputs depend on the batch",
            "The attacks attack another function than the one evaluated.",
        ),
        (
            "non-finite-values",
            "NaN or Inf in logits or gradients",
            "Non-finite values stop attacks without a sign; rows without a prediction are "
            "never counted as broken.",
        ),
    ):
        if code in flagged:
            finding = findings[code]
            out.append(Mechanism(title, (finding.explanation,), meaning, finding.remedy or ""))
    weak = [
        code
        for code in (
            "one-step-beats-iterative",
            "unbounded-attack-below-100",
            "success-not-increasing-with-epsilon",
            "attack-not-converged",
            "silent-success",
        )
        if code in flagged
    ]
    if weak and not out:
        out.append(
            Mechanism(
                "The attacks' optimisation is failing",
                tuple(findings[code].explanation for code in weak),
                "No gradient pathology was measured, but the attacks behave as if they were "
                "too weak: too few steps, a poor step size, or an objective that stalls.",
                "Run more steps or restarts, APGD, margin-loss and gradient-free attacks, and "
                "report the worst case.",
            )
        )
    elif weak:
        out.append(
            Mechanism(
                "Consequences for the attacks",
                tuple(findings[code].explanation for code in weak),
                "These follow from the mechanism above rather than add to it.",
                "As above.",
            )
        )
    for code in sorted(flagged - {c for c in CHECK_SPECS}):
        out.append(
            Mechanism(
                findings[code].title or code,
                (findings[code].explanation,),
                "A check this version of the report does not describe.",
                findings[code].remedy or "",
            )
        )
    return out

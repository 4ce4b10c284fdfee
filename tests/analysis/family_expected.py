"""What the audit must say about each member of the validation family (``EXPECTED``),
written from its mechanism before any audit was run, and the comparison of an audit document
with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RELIABILITY_CHECKS = frozenset(
    {"non-finite-values", "model-in-train-mode", "probability-outputs", "stochastic-model"}
)
MASKING_CHECKS = frozenset(
    {
        "one-step-beats-iterative",
        "black-box-beats-white-box",
        "random-search-beats-gradient",
        "targeted-beats-untargeted",
        "margin-loss-beats-cross-entropy",
        "unbounded-attack-below-100",
        "success-not-increasing-with-epsilon",
        "vanishing-gradients",
        "gradient-disagrees-with-finite-differences",
        "attack-not-converged",
        "silent-success",
    }
)
# Warnings about the attacks' own budget, not about the model: allowed on any model.
BUDGET_WARNINGS = frozenset({"attack-not-converged", "silent-success"})
# A pairwise comparison that beats PGD-CE is what "PGD-CE overstates robustness" looks like.
OVERSTATEMENT_CHECKS = frozenset(
    {
        "one-step-beats-iterative",
        "black-box-beats-white-box",
        "random-search-beats-gradient",
        "targeted-beats-untargeted",
        "margin-loss-beats-cross-entropy",
    }
)
NO_SIGN = "no sign of gradient masking"
SUSPECTED = "suspected gradient masking"
UNRELIABLE = "evaluation unreliable"


@dataclass(frozen=True)
class Expected:
    """What the audit must say about one model, from its mechanism alone.

    Attributes:
        kind: ``honest``, ``robust`` or ``masked``.
        must_fail: checks that must fail.
        must_flag: checks that must warn or fail.
        may_flag: checks that may warn or fail; every other check must pass (or be n/a).
        may_warn: checks that may warn but not fail.
        if_overstated: checks that may fail only where the independent ground truth shows that
            PGD-CE overstates robustness.
        verdicts: accepted verdicts (a verdict matches by its leading words).
        overstated: what the ground truth must say (True, False, or None for "either").
        autoattack: the version of AutoAttack whose robust accuracy, on the same samples, the
            audit's reliable robust accuracy must not significantly exceed (``standard``; ``rand``
            for a random model, AutoAttack's EOT version), or None for no such bound.
        reason: one line from the mechanism.
    """

    kind: str
    reason: str
    must_fail: frozenset[str] = frozenset()
    must_flag: frozenset[str] = frozenset()
    may_flag: frozenset[str] = frozenset()
    may_warn: frozenset[str] = BUDGET_WARNINGS
    if_overstated: frozenset[str] = frozenset()
    verdicts: tuple[str, ...] = (NO_SIGN,)
    overstated: bool | None = False
    autoattack: str | None = None


def _honest(reason: str) -> Expected:
    # No claim about the reference: AutoAttack's ensemble (APGD-T, FAB-T) outdoes a fixed-step
    # PGD-CE on unmasked networks too (Croce & Hein 2020), so "PGD-CE overstates" says nothing
    # about masking here; the audit must stay silent and within AutoAttack's bound regardless.
    return Expected("honest", reason, overstated=None, autoattack="standard")


def _masked(reason: str, *must_fail: str, overstated: bool | None = True) -> Expected:
    return Expected(
        "masked",
        reason,
        must_fail=frozenset(must_fail),
        may_flag=MASKING_CHECKS - frozenset(must_fail),
        verdicts=(SUSPECTED, UNRELIABLE),
        overstated=overstated,
    )


def _stochastic(reason: str, autoattack: str | None = None) -> Expected:
    return Expected(
        "masked",
        reason,
        must_flag=frozenset({"stochastic-model"}),
        may_flag=MASKING_CHECKS | {"model-in-train-mode", "batch-dependent-outputs"},
        verdicts=(SUSPECTED, UNRELIABLE),
        overstated=None,
        autoattack=autoattack,
    )


EXPECTED: dict[str, Expected] = {
    "digits-mlp": _honest("ReLU MLP, plain cross-entropy: piecewise linear, exact gradients"),
    "digits-cnn-maxpool": _honest("ReLU CNN with max pooling: kinks, but exact gradients"),
    "digits-cnn-batchnorm": _honest("batch norm in eval mode is a fixed affine map"),
    "digits-resnet": _honest("residual blocks with batch norm: exact gradients, no saturation"),
    "digits-cnn-gelu": _honest("smooth activation (GELU): exact, smooth gradients"),
    "mnist-cnn-maxpool": _honest("the MNIST max-pool CNN users bring: exact gradients"),
    "mnist-cnn-pgd-at": Expected(
        "robust",
        "PGD adversarial training makes it robust, not masked; a pairwise check may fail only "
        "where AutoAttack shows PGD-CE overstating its robustness",
        if_overstated=OVERSTATEMENT_CHECKS,
        verdicts=(NO_SIGN, SUSPECTED),
        overstated=None,
        autoattack="standard",
    ),
    "mnist-cnn-pgd-at-strong": Expected(
        "robust",
        "PGD adversarial training at MNIST's strength (L∞ 0.3, 10 steps, 4 epochs) makes it "
        "robust at L∞; a network trained against L∞ masks L2 gradients, so under L2 PGD-CE may "
        "overstate its robustness and a pairwise check may fail only where AutoAttack shows that",
        if_overstated=OVERSTATEMENT_CHECKS,
        verdicts=(NO_SIGN, SUSPECTED),
        overstated=None,
        autoattack="standard",
    ),
    "digits-jpeg": _masked(
        "shattered: DCT coefficients rounded (JPEG-like); round has zero gradient everywhere, "
        "so gradient attacks see nothing and Square does not care",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-binarized": _masked(
        "shattered, graph cut: (x > 0.5).float() leaves no input gradient at all; only "
        "gradient-free attacks can break it",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-wrong-backward": _masked(
        "shattered: a custom backward multiplies the input gradient by a fixed random sign per "
        "pixel, so the gradient disagrees with finite differences and misleads PGD",
        "gradient-disagrees-with-finite-differences",
        "black-box-beats-white-box",
    ),
    "digits-steep-tanh": _masked(
        "vanishing: the input squashed by 0.5 (1 + tanh(500 (x - 0.47))), saturated in float32 "
        "on every clean pixel, so input gradients are exactly zero",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-low-temperature": _masked(
        "vanishing: the last layer scaled by 1000 (softmax temperature 1e-3) saturates the "
        "float32 softmax; the cross-entropy gradient underflows, the margin loss does not",
        "vanishing-gradients",
        "margin-loss-beats-cross-entropy",
    ),
    "digits-probabilities": Expected(
        "masked",
        "probability outputs: a softmax at the end; the attacks' cross-entropy is applied on "
        "top of probabilities",
        must_fail=frozenset({"probability-outputs"}),
        may_flag=MASKING_CHECKS,
        verdicts=(UNRELIABLE,),
        overstated=None,
    ),
    "digits-random-input": _stochastic(
        "stochastic: Gaussian noise (sd 0.2) and a random shift of up to one pixel at test time"
    ),
    "digits-test-dropout": _stochastic(
        "stochastic: functional dropout (p 0.3) hard-wired on, whatever the module's mode"
    ),
    "mnist-random-ensemble": _stochastic(
        "stochastic: one of three CNNs picked at random on every call (for the whole batch), "
        "so every prediction is one draw; bounded by AutoAttack's EOT version (rand)",
        autoattack="rand",
    ),
}


def compare_flags(
    expected: Expected, document: dict[str, Any], overstated: bool | None
) -> list[str]:
    """The disagreements between an audit document and its row of ``EXPECTED``.

    Args:
        expected: the row.
        document: the audit's result document.
        overstated: the independent ground truth (None when it was not measured).

    Returns:
        One line per disagreement; empty when the audit says what the table expects.
    """
    statuses = {f["code"]: f["status"] for f in document["findings"]}
    problems = []
    for code in sorted(expected.must_fail):
        if statuses.get(code) != "fail":
            problems.append(f"{code} must fail, got {statuses.get(code, 'missing')}")
    for code in sorted(expected.must_flag):
        if statuses.get(code) not in ("warn", "fail"):
            problems.append(f"{code} must warn or fail, got {statuses.get(code, 'missing')}")
    allowed = expected.must_fail | expected.must_flag | expected.may_flag
    if overstated:
        allowed |= expected.if_overstated
    for code, status in sorted(statuses.items()):
        if status not in ("warn", "fail") or code in allowed:
            continue
        if status == "warn" and code in expected.may_warn:
            continue
        problems.append(f"{code} is not expected to {status}")
    if not any(document["verdict"].startswith(v) for v in expected.verdicts):
        problems.append(f"verdict {document['verdict']!r}, expected one of {expected.verdicts}")
    if expected.overstated is not None and overstated not in (None, expected.overstated):
        problems.append(
            f"ground truth: PGD-CE {'overstates' if overstated else 'does not overstate'} "
            "robustness, against the table"
        )
    return problems


def observed_flags(document: dict[str, Any]) -> str:
    """``fail: a, b; warn: c`` for a document's findings."""
    parts = []
    for status in ("fail", "warn"):
        codes = [f["code"] for f in document["findings"] if f["status"] == status]
        if codes:
            parts.append(f"{status}: {', '.join(codes)}")
    return "; ".join(parts) or "none"

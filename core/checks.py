"""Every red-flag check declared once, as data: its code, title, what it measures, when it
fails, the numbers it compares against (its thresholds), the sentence it says when it passes or
flags, its remedy, whether its failure suggests gradient masking or makes the evaluation
unreliable, and the keys of the evidence it records.

The words that state a threshold are formatted from its number (see :func:`word`), so the
glossary says what the check compares against; ``analysis`` reads the numbers here.

``analysis.redflags`` computes each check (torch) from these declarations, and the report's
glossary of checks and its renderers of evidence read them here, without torch. Tests keep the
three in step: every registered check (``analysis.findings.CHECK_FUNCTIONS``) is declared and
every declared check registered, the evidence of every check in real audits has only its
declared keys, and each renderer reads only those.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal

from core.document import Finding, FindingStatus

__all__ = [
    "ALPHA",
    "CHECKS",
    "INCOMPLETE",
    "NO_SIGN",
    "RUN_KEY",
    "SUSPECTED",
    "UNRELIABLE",
    "VANISHING_THRESHOLD",
    "CheckSpec",
    "EvidenceSpec",
    "red_flags",
    "run_key",
    "verdict",
    "verdict_level",
    "word",
]

# The verdict's opening words (:func:`verdict` words the rest), from the most
# serious: an attack failed, so its robust accuracies are upper bounds; a reliability check
# failed; a masking check failed; nothing failed.
INCOMPLETE = "evaluation incomplete"
UNRELIABLE = "evaluation unreliable"
SUSPECTED = "suspected gradient masking"
NO_SIGN = "no sign of gradient masking"


def verdict_level(verdict: str) -> Literal["ok", "masking", "unreliable"]:
    """How a report colours ``verdict``: ``ok`` (no sign of masking), ``masking`` (suspected),
    or ``unreliable`` (an unreliable or incomplete evaluation, or a verdict this version does
    not know)."""
    if verdict.startswith(NO_SIGN):
        return "ok"
    return "masking" if verdict.startswith(SUSPECTED) else "unreliable"


def red_flags(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """The findings the verdict counts as red flags (``suspected gradient masking (N red
    flags)``): the masking checks that failed. A warning is none, nor is a failed reliability
    check (that makes the evaluation unreliable instead); a report and the summary list every
    check that warned or failed (``core.document.WARN_OR_FAIL``)."""
    return tuple(f for f in findings if f.status == FindingStatus.FAIL and f.kind == "masking")


def verdict(findings: Iterable[Finding]) -> str:
    """The audit's verdict on its ``findings``, from the most serious: ``evaluation
    incomplete: ...`` (an attack failed), ``evaluation unreliable`` (a reliability check
    failed), ``suspected gradient masking (N red flags)`` (:func:`red_flags`) or ``no sign of
    gradient masking``."""
    findings = tuple(findings)
    failed = next(
        (f for f in findings if f.code == "attack-failed" and f.status == FindingStatus.FAIL), None
    )
    if failed is not None:
        runs = len((failed.evidence or {}).get("failed", ())) or 1
        return (
            f"{INCOMPLETE}: {runs} attack run{'s' if runs > 1 else ''} failed, robust accuracy "
            "is an upper bound"
        )
    if any(f.status == FindingStatus.FAIL and f.kind != "masking" for f in findings):
        return UNRELIABLE
    flags = len(red_flags(findings))
    if flags:
        return f"{SUSPECTED} ({flags} red flag{'s' if flags > 1 else ''})"
    return NO_SIGN


RUN_KEY = re.compile(r"^(?P<label>.+)/(?P<norm>[a-z0-9]+)/(?P<epsilon>[-+0-9.eE]+)$")
"""The key of one run in evidence keyed by run (see :func:`run_key`)."""


def run_key(label: str, norm: str, epsilon: float) -> str:
    """``label/norm/epsilon``, the epsilon as ``%.6g``: the key of one attack's run at one norm
    and epsilon in a check's evidence (``EvidenceSpec.keyed_by == "run"``)."""
    return f"{label}/{norm}/{epsilon:.6g}"


_NORMS = frozenset({"linf", "l2"})

ALPHA = 0.01
"""The significance level of every test of the checks (exact binomial and McNemar tests)."""

VANISHING_THRESHOLD = 1e-10
"""The L2 norm below which an input gradient counts as vanishing: the attacks record their
first gradients' share below it, and ``vanishing-gradients`` judges the clean ones by it."""

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def word(value: float, style: str = "") -> str:
    """``value`` as the words of a check state it, by ``style``: ``""`` as ``%g`` (``0.01``,
    ``5``), ``"%"`` a percentage (``0.01`` -> ``1 %``), ``"points"`` the number of percentage
    points (``0.05`` -> ``5``), ``"fraction"`` a simple fraction (``1/3``), ``"power"`` a power
    of ten (``0.001`` -> ``10⁻³``)."""
    if style == "%":
        return f"{value * 100:g} %"
    if style == "points":
        return f"{value * 100:g}"
    if style == "fraction":
        return str(Fraction(value).limit_denominator(100))
    if style == "power":
        return "10" + str(round(math.log10(value))).translate(_SUPERSCRIPT)
    if style:
        raise ValueError(f"unknown style {style!r}")
    return f"{value:g}"


class _Words(string.Formatter):
    """Writes ``{name}`` or ``{name:style}`` as ``word(thresholds[name], style)``."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return word(value, format_spec)


_WORDS = _Words()


@dataclass(frozen=True)
class EvidenceSpec:
    """What a check records as its evidence (a finding's ``evidence`` in the document).

    Attributes:
        fields: each key the check may write, with what it holds; a check writes the keys its
            case needs (e.g. only ``reason`` when nothing was measured).
        keyed_by: None when the evidence is one mapping of ``fields``; ``"run"`` when it maps
            each run, ``label/norm/epsilon`` (the epsilon as ``%.6g``), to one; ``"norm"`` when
            it maps each norm (``linf``, ``l2``) to one.
    """

    fields: Mapping[str, str]
    keyed_by: Literal["run", "norm"] | None = None

    def undeclared(self, evidence: Mapping[str, Any]) -> list[str]:
        """The keys of ``evidence`` this declaration does not allow, as ``key`` or
        ``entry/key``; empty when it fits."""
        if self.keyed_by is None:
            return [key for key in evidence if key not in self.fields]
        wrong = []
        for name, entry in evidence.items():
            fits = RUN_KEY.match(name) if self.keyed_by == "run" else name in _NORMS
            if not fits or not isinstance(entry, Mapping):
                wrong.append(name)
                continue
            wrong += [f"{name}/{key}" for key in entry if key not in self.fields]
        return wrong


@dataclass(frozen=True)
class CheckSpec:
    """One check.

    Attributes:
        title: its short human name.
        statistic: what it compares, for the glossary.
        fails_when: when it fails or warns, for the glossary.
        remedy: what to do when it flags (a check may say more in a given case).
        flagged: what it says when it warns or fails, unless the check words the case itself.
        passed: what it says when it passes (or does not apply), unless worded by the check.
        masking: True when its failure suggests gradient masking, False when it makes the
            evaluation itself unreliable (a reliability check).
        evidence: the keys of the evidence it records.
        thresholds: the numbers it compares against, by name (read by its function in
            ``analysis``); ``fails_when`` states those it words, formatted from them.
    """

    title: str
    statistic: str
    fails_when: str
    remedy: str = ""
    flagged: str = ""
    passed: str = ""
    masking: bool = True
    evidence: EvidenceSpec = field(default_factory=lambda: EvidenceSpec({}))
    thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


def _declare(
    title: str,
    statistic: str,
    fails_when: str,
    *,
    thresholds: Mapping[str, float],
    flagged: str = "",
    **rest: Any,
) -> CheckSpec:
    """The check whose ``statistic``, ``fails_when`` and ``flagged`` are templates: ``{name}``
    or ``{name:style}`` stands for ``thresholds[name]`` in :func:`word`'s words."""
    numbers = MappingProxyType(dict(thresholds))
    return CheckSpec(
        title,
        _WORDS.vformat(statistic, (), numbers),
        _WORDS.vformat(fails_when, (), numbers),
        flagged=_WORDS.vformat(flagged, (), numbers),
        thresholds=numbers,
        **rest,
    )


_PAIRED = (
    "An exact one-sided binomial test (α = {alpha}) of the samples it broke against a tolerated "
    "rate; every attack runs only on what the attacks before it left robust, so these are "
    "discordant samples."
)

_PAIRED_THRESHOLD = (
    "Fails above {tolerated_rate:%} of the samples left to it (at least {minimum}, and "
    "{material_share:%} of all samples)."
)


def _paired(tolerated_rate: float, minimum: int, material_share: float) -> dict[str, float]:
    """The thresholds of a pairwise check: a later attack fails it when it broke significantly
    (at ``ALPHA``) more than ``tolerated_rate`` of the samples left to it, and materially: at
    least ``minimum`` samples and ``material_share`` of all evaluated samples."""
    return {
        "tolerated_rate": tolerated_rate,
        "minimum": minimum,
        "material_share": material_share,
        "alpha": ALPHA,
    }


_PAIRED_EVIDENCE = EvidenceSpec(
    {
        "broken": "samples this attack broke of those left to it",
        "attempted": "samples left to it",
        "rate": "broken / attempted, or None when none was left",
        "tolerated_rate": "the rate tolerated",
        "share_of_samples": "broken / all evaluated samples",
        "material_share": "the share that counts as material",
        "p_value": "exact one-sided binomial test of broken against tolerated_rate",
        "robust_before": "samples every earlier attack of the comparison left robust",
        "after": "the labels of those earlier attacks",
    },
    keyed_by="run",
)
"""The evidence of the pairwise checks: per run ``label/norm/epsilon`` of the later attack."""

CHECKS: dict[str, CheckSpec] = {
    "low-clean-accuracy": _declare(
        "Clean accuracy near chance or below expectation",
        "The clean accuracy against chance (1 / classes; exact binomial test), against the "
        "accuracy the checkpoint records from its training (exact binomial test), and against "
        "the same images presented in other input conventions: no normalisation, the named "
        "ones, a grid of means 0, 0.25, 0.5 and stds 0.125, 0.25, 0.5, pixels in 0..255, BGR "
        "channel order (exact McNemar test, Bonferroni-corrected over the conventions).",
        "Fails when it is not significantly above chance (α = {alpha}), or significantly and "
        "materially below the recorded accuracy ({accuracy_gap:points} points and at least "
        "{material_samples} samples) or another convention's ({convention_gain:%} of the "
        "samples and at least {material_samples}); warns when only significantly. A "
        "reliability check: a model fed its inputs in the wrong convention makes every robust "
        "accuracy meaningless.",
        remedy="Audit the model in the input convention it was trained with: give --normalization "
        "(imagenet, cifar10, cifar10-torchvision, mnist, or MEAN,..:STD,..) and --bounds as the "
        "training code had them, and check the channel order and the dataset; until then every "
        "robust accuracy here is that of a model fed the wrong inputs",
        masking=False,
        thresholds={
            "alpha": ALPHA,
            # A clean accuracy this far (and at least material_samples) below the recorded
            # one, or below another input convention's, is material: more than a change of
            # device, batch or test subset moves an honest evaluation, and enough to change
            # what every robust accuracy means.
            "accuracy_gap": 0.05,
            "material_samples": 5,
            # Another input convention that scores significantly better (Bonferroni over those
            # tried) by this share of the samples (and material_samples) fails: the audit
            # describes a model fed the wrong inputs. Smaller than accuracy_gap because a gain
            # is evidence about the input pipeline, not a size of harm: an MNIST CNN trained on
            # inputs normalised by (0.1307, 0.3081), audited without them, scored 0.943 against
            # 0.977 (38 gained, 4 lost, p = 3e-8), while no zoo checkpoint has a significant
            # gain under any convention tried.
            "convention_gain": 0.01,
        },
        evidence=EvidenceSpec(
            {
                "clean_accuracy": "share of the evaluated samples classified correctly",
                "correct": "samples classified correctly",
                "samples": "samples evaluated",
                "num_classes": "the model's number of classes (only when known)",
                "chance": "1 / num_classes",
                "chance_p_value": "exact binomial test of correct against chance",
                "recorded_clean_accuracy": (
                    "the clean accuracy the checkpoint records from its training, or None"
                ),
                "recorded_p_value": (
                    "exact binomial test of correct against the recorded accuracy (only with one)"
                ),
                "recorded_shortfall": "the recorded accuracy less clean_accuracy (only with one)",
                "conventions": (
                    "each other input convention tried: flag, approximate, "
                    "accuracy, only_this and only_current (samples only it or "
                    "only the current convention classifies correctly), p_value "
                    "(exact McNemar test)"
                ),
                "convention_alpha": (
                    "the significance level over the conventions, Bonferroni-corrected"
                ),
                "conventions_not_run": "convention name -> the model's error on it",
            }
        ),
    ),
    "one-step-beats-iterative": _declare(
        "One-step attack beats iterative",
        "Samples FGSM broke that the iterative attacks (PGD) left robust. " + _PAIRED,
        _PAIRED_THRESHOLD,
        remedy="An iterative attack should dominate its single step: check the step size and "
        "the number of steps, and look for gradient masking (Athalye et al. 2018, 3.1)",
        flagged="FGSM broke samples that the iterative attacks left robust",
        passed="FGSM found nothing that the iterative attacks missed",
        thresholds=_paired(0.01, 3, 0.01),
        evidence=_PAIRED_EVIDENCE,
    ),
    "black-box-beats-white-box": _declare(
        "Black-box beats white-box",
        "Samples Square broke that every gradient attack left robust. " + _PAIRED,
        _PAIRED_THRESHOLD,
        remedy="Gradients are uninformative: report the worst case over all attacks (reliable "
        "robust accuracy) and suspect gradient masking; try BPDA/EOT or a margin loss",
        flagged="Square broke samples that every gradient attack left robust",
        passed="Square found little that the gradient attacks missed",
        thresholds=_paired(0.05, 5, 0.02),
        evidence=_PAIRED_EVIDENCE,
    ),
    "random-search-beats-gradient": _declare(
        "Random search beats gradients",
        "Samples random noise in the ε-ball broke that the gradient attacks left robust. "
        + _PAIRED,
        _PAIRED_THRESHOLD,
        remedy="Random sampling should never beat a gradient attack: gradients are masked or "
        "broken",
        flagged="random noise in the epsilon ball broke samples that the gradient attacks left "
        "robust",
        passed="random noise found nothing that the gradient attacks missed",
        thresholds=_paired(0.01, 3, 0.01),
        evidence=_PAIRED_EVIDENCE,
    ),
    "targeted-beats-untargeted": _declare(
        "Targeted beats untargeted",
        "Samples PGD-T broke that PGD-CE left robust (the NormOut thesis' pattern). " + _PAIRED,
        _PAIRED_THRESHOLD,
        remedy="The untargeted cross-entropy attack is failing (its gradient vanishes or points "
        "the wrong way); use a margin loss or multi-target attacks and report the worst case",
        flagged="the targeted attack broke many samples the untargeted one left robust",
        passed="the targeted attack found little beyond the untargeted one",
        thresholds=_paired(0.10, 5, 0.05),
        evidence=_PAIRED_EVIDENCE,
    ),
    "margin-loss-beats-cross-entropy": _declare(
        "Margin loss beats cross-entropy",
        "PGD on the margin (CW) loss runs on every sample beside PGD-CE with the same budget; "
        "the samples only one of them broke are compared by an exact McNemar test. A saturated "
        "softmax starves the cross-entropy gradient, not the margin's (AutoAttack's reason for "
        "its DLR loss).",
        "Fails when the margin loss breaks significantly (α = {alpha}) and materially (at least "
        "{minimum} samples and {material_share:%} of all) more.",
        remedy="The cross-entropy gradient is starved (a saturated softmax, as with inflated "
        "logits): report margin-loss (CW/DLR) attacks and the worst case over all attacks",
        flagged="PGD on the margin loss broke more samples than PGD-CE with the same budget",
        passed="PGD on the margin loss found no more than PGD-CE",
        thresholds={"alpha": ALPHA, "minimum": 5, "material_share": 0.02},
        evidence=EvidenceSpec(
            {
                "only_margin_loss": "clean-correct samples only the margin-loss attack broke",
                "only_cross_entropy": "clean-correct samples only its cross-entropy peer broke",
                "share_of_samples": (
                    "(only_margin_loss - only_cross_entropy) / all evaluated samples"
                ),
                "material_share": "the share that counts as material",
                "p_value": "exact McNemar test of the discordant samples",
                "peer": "the label of the cross-entropy attack it is compared with",
            },
            keyed_by="run",
        ),
    ),
    "unbounded-attack-below-100": _declare(
        "Unbounded attack below 100 %",
        "Samples that survive the sweep's attack at an ε covering the whole input box.",
        "Fails when more than {fail_share:%} survive; any survivor warns.",
        remedy="With an unbounded budget every sample must fall; if not, the attack is failing "
        "(masked gradients, too few steps) and bounded results are not trustworthy",
        flagged="an attack allowed to change the whole image did not reach 100 % success",
        passed="the unbounded attack reached (nearly) 100 % success",
        # It fails when more samples survive than the larger of fail_share of all and
        # fail_minimum.
        thresholds={"fail_share": 0.01, "fail_minimum": 1},
        evidence=EvidenceSpec(
            {
                "epsilon": "the unbounded radius of the sweep",
                "survived": "samples it left robust",
                "samples": "samples evaluated",
                "success_rate": "1 - survived / samples, or None without samples",
            },
            keyed_by="norm",
        ),
    ),
    "success-not-increasing-with-epsilon": _declare(
        "Success not increasing with epsilon",
        "In the independent per-ε runs (on a subsample), samples broken at one ε and not at the "
        "next, against the reverse (exact McNemar test).",
        "Fails on a significant drop (at least {minimum} samples, α = {alpha}); a plateau below "
        "{plateau:%} success warns.",
        remedy="A larger budget can only help a working attack: non-monotonic success or an "
        "early plateau means the optimisation is failing",
        flagged="attack success fell, or stalled well below 100 %, as epsilon grew",
        passed="attack success grows with epsilon",
        # A drop of at least warn_minimum samples, more lost than gained, warns even when it
        # is not significant.
        thresholds={"minimum": 3, "alpha": ALPHA, "plateau": 0.9, "warn_minimum": 2},
        evidence=EvidenceSpec(
            {
                "epsilons": "the independent sweep's radii",
                "success_rate": "its success rate at each radius",
                "samples": "the size of its subsample",
                "steps": (
                    "between consecutive radii: from, to, lost and gained (samples "
                    "broken at one and not at the other), p_value (exact McNemar test)"
                ),
                "plateau_below_90": (
                    "the success rate stops growing below 90 % at the largest bounded radius"
                ),
            },
            keyed_by="norm",
        ),
    ),
    "vanishing-gradients": _declare(
        "Zero or vanishing gradients",
        "The share of first input gradients (clean and in the attacks) that are exactly zero, "
        "and whether the input gradient exists at all (a cut autograd graph: detach, a "
        "comparison, an integer cast, a NumPy round trip).",
        "Fails above {fail_zero:%} exact zeros or without an input gradient; warns above "
        "{warn_zero:%}, or when more than {warn_vanishing:%} are below the vanishing threshold. "
        "Not measured (n/a, naming the error) "
        "when the model raises on an input that requires grad.",
        remedy="Vanishing gradients starve gradient attacks (saturated softmax, quantisation): "
        "use a margin loss on logits, BPDA, or gradient-free attacks",
        # Exact zeros (a saturated softmax underflowing, a quantised input) starve every
        # gradient attack. Tiny but non-zero gradients (below vanishing_norm) still carry a
        # direction for sign and normalised steps, so they only warn when they are the rule.
        thresholds={
            "fail_zero": 0.05,
            "warn_zero": 0.01,
            "warn_vanishing": 0.25,
            "vanishing_norm": VANISHING_THRESHOLD,
        },
        evidence=EvidenceSpec(
            {
                "input_gradient_exists": (
                    "whether the loss has a gradient with respect to the input"
                ),
                "reason": "why there is none (only without one)",
                "error": "the model's error when its input required grad (only when it raised)",
                "zero_fraction": "the larger of clean_zero_fraction and attack_zero_fraction",
                "clean_zero_fraction": (
                    "share of the clean samples whose input gradient is exactly zero"
                ),
                "attack_zero_fraction": (
                    "share of the gradient attacks' first gradients that are exactly zero"
                ),
                "vanishing_fraction": "share of the attacks' first gradients below threshold",
                "clean_vanishing_fraction": (
                    "share of the clean samples' gradients below threshold, or None"
                ),
                "threshold": "the norm below which a gradient counts as vanishing",
                "measured": "first gradients of the attacks measured",
                "clean_measured": "clean samples' gradients measured",
            }
        ),
    ),
    "non-finite-values": CheckSpec(
        "NaN or Inf in logits or gradients",
        "Samples with non-finite clean logits, samples whose attack example had non-finite "
        "logits, and per attack, norm and ε how many; such a row has no prediction and never "
        "counts as a success.",
        "Fails on any NaN or Inf (a reliability check).",
        remedy="Non-finite values break attacks silently: find the operation that overflows "
        "(log of zero, division by zero) and fix it before evaluating",
        passed="all logits and gradients are finite",
        masking=False,
        evidence=EvidenceSpec(
            {
                "clean_logits": "clean samples with NaN or Inf logits in the probes",
                "clean_gradients": "clean samples with NaN or Inf input gradients in the probes",
                "clean_samples": "samples the suite's clean pass found with non-finite logits",
                "attack_samples": (
                    "samples whose returned example had non-finite logits in any run"
                ),
                "attack_logits": (
                    "sample evaluations with non-finite logits over every attack's passes"
                ),
                "attack_gradients": "non-finite input gradients over the gradient attacks' steps",
                "attacks": (
                    "label/norm[ (stage)] -> epsilons, samples (per epsilon) and "
                    "evaluations, for each run that met them"
                ),
            }
        ),
    ),
    "gradient-disagrees-with-finite-differences": _declare(
        "Gradients disagree with finite differences",
        "On 256 samples, one random direction each: the directional derivative of a fixed "
        "class margin against central, forward and backward differences at three step sizes "
        "(float64 where the model runs in it). Not applicable to stochastic models, without an "
        "input gradient, or when the model raises on the inputs the differences take.",
        "Fails when more than {tolerance:%} disagreement at every step occurs on significantly "
        "more than {tolerated_rate:%} of pairs (exact binomial test, α = {alpha}) and on at "
        "least {material_rate:%} (at least {minimum} pairs).",
        remedy="The backward pass does not describe the function (shattered gradients, a "
        "non-differentiable or custom-gradient layer): use BPDA or gradient-free attacks",
        thresholds={
            # The relative difference between a finite difference and the directional
            # derivative above which they disagree (the probe's default).
            "tolerance": 0.1,
            # Pairs an honest network may have disagreeing at every step: kinks on both sides
            # of the centre within the smallest step (0 of 1000 pairs measured on each of
            # max-pool, batch-norm, residual and GELU/softplus networks trained on MNIST and
            # digits, i.e. below 0.3 % at 95 %).
            "tolerated_rate": 0.01,
            "alpha": ALPHA,
            "material_rate": 0.05,
            "minimum": 5,
        },
        evidence=EvidenceSpec(
            {
                "reason": "why it was not measured (then the only key)",
                "disagreeing": "sample-direction pairs that disagree at every step",
                "pairs": "pairs whose difference changed measurably",
                "disagreement_fraction": "disagreeing / pairs",
                "tolerated_rate": "the rate an honest network may show",
                "material_rate": "the rate that counts as material",
                "p_value": "exact one-sided binomial test of disagreeing against tolerated_rate",
                "steps": "the finite-difference step sizes",
                "step_disagreement": "the share of pairs disagreeing at each step",
                "tolerance": "the relative difference that counts as disagreeing",
                "precision": "the floating-point precision of the differences",
                "nonfinite_pairs": "pairs with NaN or Inf in a difference",
                "median_ratio": "median finite difference over directional derivative, or None",
            }
        ),
    ),
    "stochastic-model": CheckSpec(
        "Stochastic model",
        "Four forward passes of the first batch: the largest logit change and the predictions "
        "that flip.",
        "Fails when a clean prediction flips (the classifier is random); warns when only the "
        "logits move. Gradients are then averaged over 8 passes (EOT). A reliability check.",
        remedy="Randomised models mask gradients: keep EOT on and read robust accuracy as an "
        "expectation over the randomness",
        masking=False,
        evidence=EvidenceSpec(
            {
                "max_repeat_difference": "the largest logit change between repeated passes",
                "repeat_samples": "samples in each repeated pass",
                "num_repeats": "passes repeated",
                "prediction_flips": "samples whose prediction changed between passes",
                "prediction_flip_fraction": "prediction_flips / repeat_samples",
                "eot_samples": "passes the attacks averaged each gradient over (1: none)",
            }
        ),
    ),
    "batch-dependent-outputs": _declare(
        "Outputs depend on the batch",
        "64 samples evaluated in the audit's batch and alone (or in a pair): the largest "
        "change relative to the row's largest logit; for a stochastic model, how often passes "
        "pair up by batch composition.",
        "Fails above {tolerance:power} relative change (deterministic), or pairing significantly "
        "above the {chance:fraction} of exchangeable passes (stochastic). A reliability check.",
        remedy="Outputs that depend on the other samples (batch norm in train mode, a max over "
        "the batch) are attacked through another function than they are evaluated with: "
        "evaluate in eval mode with per-sample normalisation, or attack and evaluate one "
        "sample at a time",
        passed="each sample's logits are the same alone and in its batch",
        masking=False,
        thresholds={
            # The logit change, relative to the row's largest absolute logit, above which a
            # sample's output depends on its batch (the probe's default): batched and single
            # matrix products differ by rounding only, far below it.
            "tolerance": 1e-3,
            # Of two batched passes and two passes alone, the pairings by composition among
            # the three ways to pair four exchangeable passes.
            "chance": 1 / 3,
            "alpha": ALPHA,
        },
        evidence=EvidenceSpec(
            {
                "composition": "how the samples were evaluated apart: single, pair, or refused",
                "batch_size": "the batch they were evaluated in",
                "samples": "samples compared",
                "max_relative_difference": (
                    "the largest logit change relative to the row's largest logit"
                ),
                "tolerance": "the relative change that counts",
                "differing": "samples changed by more than tolerance",
                "prediction_flips": "samples whose prediction changed",
                "grouped": "stochastic model: samples whose passes pair up by composition",
                "compared": "stochastic model: samples compared so",
                "chance": "stochastic model: the share expected of exchangeable passes (1/3)",
                "p_value": "stochastic model: exact binomial test of grouped against chance",
            }
        ),
    ),
    "model-in-train-mode": CheckSpec(
        "Model left in train mode",
        "Submodules still in training mode after eval().",
        "Fails on any such module. A reliability check.",
        remedy="Dropout or batch norm in training mode at test time makes predictions random; "
        "call eval() on every submodule (or evaluate stochastically on purpose, with EOT)",
        passed="every module is in eval mode",
        masking=False,
        evidence=EvidenceSpec(
            {
                "modules": "names of the submodules in training mode after eval()",
            }
        ),
    ),
    "probability-outputs": CheckSpec(
        "Probabilities instead of logits",
        "Whether the outputs are rows in [0, 1] summing to 1.",
        "Fails when they are. A reliability check.",
        remedy="Cross-entropy on probabilities applies softmax twice and flattens gradients: "
        "remove the final softmax so the model returns logits",
        flagged="the model outputs probabilities (rows in [0, 1] summing to 1)",
        passed="the model outputs logits",
        masking=False,
        evidence=EvidenceSpec(
            {
                "probability_outputs": "whether the outputs are rows in [0, 1] summing to 1",
            }
        ),
    ),
    "attack-not-converged": _declare(
        "Attack not converged",
        "The mean loss of the still-robust samples over the last {tail_share:%} of PGD steps, "
        "and the samples broken in those steps (from each sample's success step).",
        "Warns when the loss still rises and the attack broke at least {minimum} samples (and "
        "{material_share:%} of those attacked) in those steps.",
        remedy="Run more steps (or APGD, which adapts its step size) until the loss stops rising",
        flagged="the loss of the still-robust samples was still rising over the last "
        "{tail_share:%} of steps, and the attack was still breaking samples there",
        passed="the iterative attacks' loss had levelled off",
        masking=False,
        thresholds={
            # The last tail_share of the steps (at least one) of a run of at least min_steps.
            "tail_share": 0.1,
            "min_steps": 10,
            # The loss still rises when its rise over that tail exceeds rise_share of its
            # rise over all steps and min_rise.
            "rise_share": 0.01,
            "min_rise": 1e-3,
            # Breaking material numbers of samples there: at least minimum and
            # material_share of those attacked.
            "minimum": 5,
            "material_share": 0.02,
        },
        evidence=EvidenceSpec(
            {
                "robust_samples": "attacked samples still robust at the end",
                "total_rise": "the rise of their mean loss over all steps",
                "last_10pct_rise": "its rise over the last 10 % of steps",
                "broken_in_last_10pct": (
                    "samples broken in those steps, or None when the attack does not say"
                ),
                "attacked": "samples attacked",
            },
            keyed_by="run",
        ),
    ),
    "silent-success": _declare(
        "Silent success",
        "Samples an intermediate iterate fooled but the last one did not (counted as broken "
        "here; a last-iterate evaluation would miss them), in the runs that went on after a "
        "sample's first success: without early stopping, or targeted and stopping only at the "
        "target. A run that stops a sample at its first success (the default, and the "
        "independent sweep's) cannot show one.",
        "Warns at {minimum} samples and {material_share:%} of those attacked; not applicable when "
        "every iterative run "
        "stopped early (set early_stop = false on the swept attack to observe it).",
        remedy="Keep the best iterate, not the last (as this audit does) when reporting robust "
        "accuracy; to observe silent successes, set early_stop = false on the swept attack "
        "in a suite file (its sweeps then run every step)",
        masking=False,
        # Material when a last-iterate evaluation would overstate robust accuracy by at least
        # minimum samples and material_share of those attacked, the bar of the other checks.
        thresholds={"minimum": 5, "material_share": 0.02},
        evidence=EvidenceSpec(
            {
                "samples": (
                    "label/norm/main|independent -> silent (samples an intermediate "
                    "iterate fooled and the last did not) and attacked, per run that "
                    "went on after a first success"
                ),
                "total": "silent samples over those runs",
                "early_stopped": "the runs that stopped each sample at its first success",
            }
        ),
    ),
    "attack-failed": CheckSpec(
        "No attack failed",
        "Attack and sweep runs that raised (out of memory, a library error, a model raising "
        "on some inputs) or could not apply, per norm and epsilon, with their errors. A failed "
        "run broke nothing, so the samples it would have attacked count as robust.",
        "Fails on any failed run: the verdict is then 'evaluation incomplete' and every robust "
        "accuracy at that norm and epsilon an upper bound. An attack that cannot apply (no input "
        "gradient) is listed, not flagged: vanishing-gradients judges that.",
        remedy="Fix the cause (the error says it: memory, a suite value, the model raising on "
        "some inputs) and rerun; a failed attack is evidence of nothing",
        passed="every attack of the suite ran at every norm and epsilon",
        masking=False,
        evidence=EvidenceSpec(
            {
                "failed": (
                    "the runs that raised: norm, stage, attack, epsilon (None for a sweep), message"
                ),
                "not_applicable": "the runs that could not apply, likewise",
            }
        ),
    ),
}
"""Every check, by code, in the order ``analysis.redflags`` runs them."""

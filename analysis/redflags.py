"""Gradient-masking red flags: each check is one function from the evidence to one finding.

The checks follow Athalye et al. (2018, section 3.1), Carlini et al. (2019) and the
indicators of attack failure of Pintor et al. (2022), and AutoAttack's warnings. Comparisons
between attacks are paired: in the suite every attack runs only on the samples that the
attacks before it left robust, so "attack B broke samples that A missed" is a count of
discordant samples, tested with an exact one-sided binomial test against a small tolerated
rate. Noise on 1000 samples therefore raises nothing.

Adding a check: declare it in ``core/checks.py`` (its title, what it measures, when it fails,
its sentences and remedy, read also by the torch-free report), write a function
``(Evidence) -> Judged`` decorated with ``@check(code)``, document it in the table of the
README, and give it a renderer of its evidence (``reports/evidence.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

from analysis.conventions import ConventionTrial
from analysis.probes import ModelProbes
from attacks import AttackRecord, Family, NormOutcome, SuiteResult, list_attacks, registry
from core.boundary import error_line
from core.checks import CHECKS as DECLARED
from core.stats import binomial_tail, mcnemar_exact

__all__ = ["CHECKS", "Evidence", "Finding", "Judged", "Status", "run_checks", "verdict"]

ALPHA = 0.01  # significance level of every paired test


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


_ORDER = {Status.NOT_APPLICABLE: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True)
class Finding:
    """The outcome of one check.

    Attributes:
        code: stable identifier, e.g. ``black-box-beats-white-box``.
        title: short human name.
        status: pass, warn, fail or n/a.
        evidence: the numbers behind the status (JSON-able).
        explanation: one sentence on what was seen.
        remedy: what to do about it.
        masking: True for checks whose failure suggests gradient masking, False for checks
            whose failure makes the evaluation itself unreliable.
    """

    code: str
    title: str
    status: Status
    evidence: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""
    remedy: str = ""
    masking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "status": self.status.value,
            "evidence": self.evidence,
            "explanation": self.explanation,
            "remedy": self.remedy,
            "kind": "masking" if self.masking else "reliability",
        }


@dataclass(frozen=True)
class Evidence:
    """Everything the checks read.

    Attributes:
        suite: the attack suite's outcome (None when no attacks ran).
        probes: direct measurements of the model.
        eot_samples: forward passes per gradient the suite used (1 = no EOT).
        num_classes: the model's number of classes (None: unknown).
        recorded_clean_accuracy: the clean accuracy the checkpoint records from its training
            (on the dataset's test split), or None.
        conventions: the model's clean correctness under other input conventions
            (``analysis.conventions``).
    """

    suite: SuiteResult | None
    probes: ModelProbes
    eot_samples: int = 1
    num_classes: int | None = None
    recorded_clean_accuracy: float | None = None
    conventions: tuple[ConventionTrial, ...] = ()


@dataclass(frozen=True)
class Judged:
    """What a check found: its status, the numbers behind it, and, where the check words the
    case itself, its sentence and remedy (None: the ones declared in ``core.checks``)."""

    status: Status
    evidence: dict[str, Any]
    explanation: str | None = None
    remedy: str | None = None


Check = Callable[[Evidence], Finding]
CHECKS: dict[str, Check] = {}


def check(code: str) -> Callable[[Callable[[Evidence], Judged]], Check]:
    """Register a check under ``code``, which ``core.checks`` declares: the finding takes its
    title, kind, default sentences and remedy from there."""
    spec = DECLARED[code]

    def register(judge: Callable[[Evidence], Judged]) -> Check:
        def run(evidence: Evidence) -> Finding:
            judged = judge(evidence)
            flagged = judged.status in (Status.WARN, Status.FAIL)
            explanation = judged.explanation
            if explanation is None:
                explanation = spec.flagged if flagged else spec.passed
            remedy = spec.remedy if judged.remedy is None else judged.remedy
            return Finding(
                code, spec.title, judged.status, judged.evidence, explanation, remedy, spec.masking
            )

        functools.update_wrapper(run, judge)  # its name and docstring
        CHECKS[code] = run
        return run

    return register


def _worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_ORDER.__getitem__, default=Status.NOT_APPLICABLE)


def _family(record: AttackRecord) -> Family:
    return registry.get(record.kind).family


def _find(outcome: NormOutcome, kind: str, label: str | None = None) -> AttackRecord | None:
    for record in outcome.attacks:
        if record.kind == kind and (label is None or record.label == label):
            return record
    return None


def _grade(enough: bool, significant: bool, material: bool) -> Status:
    """Fail on an excess that is significant and material, warn on one that is only one of
    the two, pass otherwise; ``enough``: at least the check's minimum number of samples."""
    if enough and significant and material:
        return Status.FAIL
    if enough and (significant or material):
        return Status.WARN
    return Status.PASS


def _excess_breaks(
    later: AttackRecord,
    earlier_robust_count: int,
    k: int,
    tolerated: float,
    minimum: int,
    min_effect: float,
) -> tuple[Status, dict[str, Any]]:
    """Did ``later`` break more of the samples left to it than a tolerated rate allows?

    It fails when the excess is significant (exact binomial test at ``ALPHA``) and material:
    at least ``minimum`` samples and a share ``min_effect`` of all evaluated samples, i.e. the
    robust accuracy of the earlier attacks was overstated by that much. It warns when at least
    ``minimum`` samples were broken and only one of the two holds: a significant excess too
    small to matter, or a material one that the sample cannot yet tell from the tolerated rate.
    """
    broken = int((later.success[k] & later.attacked[k]).sum())
    attempted = int(later.attacked[k].sum())
    total = int(later.success.shape[1])
    p_value = binomial_tail(broken, attempted, tolerated) if attempted else 1.0
    effect = broken / total if total else 0.0
    status = (
        _grade(broken >= minimum, p_value < ALPHA, effect >= min_effect)
        if attempted
        else Status.NOT_APPLICABLE
    )
    return status, {
        "broken": broken,
        "attempted": attempted,
        "rate": broken / attempted if attempted else None,
        "tolerated_rate": tolerated,
        "share_of_samples": effect,
        "material_share": min_effect,
        "p_value": p_value,
        "robust_before": earlier_robust_count,
    }


def _pairwise(
    evidence: Evidence,
    later_kinds: Sequence[str],
    earlier_kinds: Sequence[str],
    tolerated: float,
    minimum: int,
    min_effect: float,
) -> tuple[Status, dict[str, Any]]:
    """For each norm and epsilon: did an attack of ``later_kinds`` break samples that every
    attack of ``earlier_kinds`` (run before it) left robust, beyond ``tolerated``?"""
    suite = evidence.suite
    if suite is None:
        return Status.NOT_APPLICABLE, {}
    statuses: list[Status] = []
    rows: dict[str, Any] = {}
    for outcome in suite.norms:
        records = list(outcome.attacks)
        for k, epsilon in enumerate(outcome.epsilons):
            for i, later in enumerate(records):
                if later.kind not in later_kinds:
                    continue
                before = [r for r in records[:i] if r.kind in earlier_kinds]
                if not before:
                    continue
                robust = suite.clean_correct.clone()
                for record in before:
                    robust &= ~record.success[k]
                status, row = _excess_breaks(
                    later, int(robust.sum()), k, tolerated, minimum, min_effect
                )
                row["after"] = [r.label for r in before]
                rows[f"{later.label}/{outcome.norm.value}/{epsilon:.6g}"] = row
                statuses.append(status)
    return _worst(statuses), rows


MATERIAL_ACCURACY_GAP = 0.05
"""A clean accuracy this far (and at least ``MATERIAL_SAMPLES``) below the recorded one, or
below another input convention's, is material: more than a change of device, batch or test
subset moves an honest evaluation, and enough to change what every robust accuracy means."""
MATERIAL_SAMPLES = 5

MATERIAL_CONVENTION_GAIN = 0.01
"""Another input convention that scores significantly better (Bonferroni over those tried)
by this share of the samples (and ``MATERIAL_SAMPLES``) fails: the audit describes a model fed
the wrong inputs. Smaller than ``MATERIAL_ACCURACY_GAP`` because a gain is evidence about the
input pipeline, not a size of harm: an MNIST CNN trained on inputs normalised by (0.1307,
0.3081), audited without them, scored 0.943 against 0.977 (38 gained, 4 lost, p = 3e-8),
while no zoo checkpoint has a significant gain under any convention tried."""


def _clean_accuracy_parts(
    evidence: Evidence, correct: Tensor
) -> tuple[list[Status], list[str], dict[str, Any]]:
    """The three comparisons of ``low-clean-accuracy``: chance, the recorded accuracy and the
    other input conventions; their statuses, the sentences of those that did not pass, and
    the numbers."""
    n, hits = int(correct.numel()), int(correct.sum())
    accuracy = hits / n
    statuses: list[Status] = []
    seen: list[str] = []
    rows: dict[str, Any] = {"clean_accuracy": accuracy, "correct": hits, "samples": n}
    classes = evidence.num_classes
    if classes is not None and classes >= 2:
        chance = 1 / classes
        p_chance = binomial_tail(hits, n, chance)
        rows.update(num_classes=classes, chance=chance, chance_p_value=p_chance)
        if p_chance >= ALPHA:
            statuses.append(Status.FAIL)
            seen.append(
                f"clean accuracy {accuracy:.3f} ({hits}/{n}) is not significantly above chance "
                f"({chance:.3f} for {classes} classes; p = {p_chance:.2g})"
            )
    recorded = evidence.recorded_clean_accuracy
    rows["recorded_clean_accuracy"] = recorded
    if recorded is not None:
        # P[X <= hits] for X ~ Binomial(n, recorded), as an upper tail of the misses.
        p_recorded = binomial_tail(n - hits, n, 1 - recorded)
        shortfall = recorded - accuracy
        expected_hits = recorded * n
        rows.update(recorded_p_value=p_recorded, recorded_shortfall=shortfall)
        status = _grade(
            expected_hits - hits >= MATERIAL_SAMPLES,
            p_recorded < ALPHA,
            shortfall >= MATERIAL_ACCURACY_GAP,
        )
        statuses.append(status)
        if status is not Status.PASS:
            seen.append(
                f"clean accuracy {accuracy:.3f} ({hits}/{n}) is {shortfall:.3f} below the "
                f"{recorded:.3f} the checkpoint records (p = {p_recorded:.2g})"
            )
    failed = {t.convention.name: t.error for t in evidence.conventions if t.correct is None}
    if failed:
        rows["conventions_not_run"] = failed
    measured = len(evidence.conventions) - len(failed)
    if measured:
        # Bonferroni over the conventions tried: the best of many is tested against them all.
        alpha = ALPHA / measured
        tried: dict[str, Any] = {}
        # The largest gain; on a tie, a named convention before a grid point, then the first.
        better: list[tuple[tuple[int, bool, int], str, Status]] = []
        for index, trial in enumerate(evidence.conventions):
            if trial.correct is None:
                continue
            other = trial.correct.to(correct.device)
            only_other = int((other & ~correct).sum())
            only_current = int((correct & ~other).sum())
            p_value = mcnemar_exact(only_other, only_current)
            gain = only_other - only_current
            convention = trial.convention
            tried[convention.name] = {
                "flag": convention.flag,
                "approximate": convention.approximate,
                "accuracy": int(other.sum()) / n,
                "only_this": only_other,
                "only_current": only_current,
                "p_value": p_value,
            }
            if p_value < alpha and gain >= MATERIAL_SAMPLES:
                status = Status.FAIL if gain / n >= MATERIAL_CONVENTION_GAIN else Status.WARN
                rank = (gain, not convention.approximate, -index)
                better.append((rank, convention.name, status))
        rows.update(conventions=tried, convention_alpha=alpha)
        if better:
            _, name, status = max(better)
            best = tried[name]
            statuses.append(status)
            if best["approximate"]:
                fix = (
                    f"it was likely trained with a normalisation near this one: give "
                    f"--normalization with its training statistics (the nearest tried: "
                    f"{best['flag']})"
                )
            elif best["flag"]:
                fix = f"give {best['flag']}"
            else:
                fix = "no flag does this: wrap the model so that it reverses the channels"
            seen.append(
                f"presented as {name}, the same images score {best['accuracy']:.3f} "
                f"({best['only_this']} samples gained, {best['only_current']} lost; p = "
                f"{best['p_value']:.2g}): {fix}"
                + (
                    f" ({len(better) - 1} other convention(s) also do better)"
                    if len(better) > 1
                    else ""
                )
            )
    return statuses, seen, rows


@check("low-clean-accuracy")
def low_clean_accuracy(evidence: Evidence) -> Judged:
    """Clean accuracy near chance, far below what the checkpoint records, or far below what
    the same images score in another input convention: the model most likely sees its inputs
    otherwise than it was trained on them, and every robust accuracy of the audit describes
    that mis-fed model (reliability).

    Near chance: not significantly above ``1 / num_classes`` (exact one-sided binomial test,
    α = ``ALPHA``). Below the recorded accuracy or another convention's: significantly (exact
    binomial test against the recorded rate; exact McNemar test against each convention,
    Bonferroni-corrected over the conventions tried) and materially (``MATERIAL_ACCURACY_GAP``
    below the recorded accuracy, ``MATERIAL_CONVENTION_GAIN`` gained by another convention,
    and at least ``MATERIAL_SAMPLES`` samples) fails; significant but not material warns.
    """
    suite = evidence.suite
    if suite is None or suite.num_samples == 0:
        return Judged(
            Status.NOT_APPLICABLE,
            {},
            "not measured: no clean evaluation ran",
            remedy="",
        )
    correct = suite.clean_correct
    statuses, seen, rows = _clean_accuracy_parts(evidence, correct)
    status = _worst([Status.PASS, *statuses])
    if status is Status.PASS:
        accuracy, hits, n = rows["clean_accuracy"], rows["correct"], rows["samples"]
        parts = []
        if "chance" in rows:
            parts.append(f"is well above chance ({rows['chance']:.3f})")
        if rows["recorded_clean_accuracy"] is not None:
            parts.append(f"agrees with the {rows['recorded_clean_accuracy']:.3f} recorded")
        if "conventions" in rows:
            parts.append(f"no other of {len(rows['conventions'])} input conventions does better")
        if len(parts) > 1:
            parts[-1] = "and " + parts[-1]
        explanation = f"clean accuracy {accuracy:.3f} ({hits}/{n}) " + (
            ", ".join(parts) if parts else "has nothing to be compared with"
        )
        if "conventions_not_run" in rows:
            explanation += (
                f"; {len(rows['conventions_not_run'])} other convention(s) could not be tried "
                "(the model raised on them)"
            )
    else:
        explanation = (
            "; ".join(seen)
            + ". The model most likely sees its inputs in another convention than it was "
            "trained with: normalisation (--normalization), the range or scale of the pixels "
            "(0..255 against 0..1: --bounds sets the range of the data and the attacks, "
            "--normalization 0:0.00392157 multiplies [0, 1] pixels by 255), the channel order "
            "(RGB against BGR), or another dataset (--dataset)"
        )
    return Judged(
        status,
        rows,
        explanation,
    )


GRADIENT = None
"""In ``PAIRWISE_CHECKS``: every gradient attack, whatever its family."""

PAIRWISE_CHECKS: tuple[tuple[str, Family, Family | None, float, int, float], ...] = (
    # code, later attacks' family, earlier attacks' family, tolerated rate, minimum samples,
    # material share of all samples (see _excess_breaks)
    ("one-step-beats-iterative", Family.ONE_STEP, Family.ITERATIVE, 0.01, 3, 0.01),
    ("black-box-beats-white-box", Family.BLACK_BOX, GRADIENT, 0.05, 5, 0.02),
    ("random-search-beats-gradient", Family.RANDOM, GRADIENT, 0.01, 3, 0.01),
    ("targeted-beats-untargeted", Family.TARGETED, Family.ITERATIVE, 0.10, 5, 0.05),
)
"""The checks that compare attacks pairwise: did an attack of the later family break samples
that every attack of the earlier one, run before it, left robust, beyond the tolerated rate?"""


def _kinds(family: Family | None) -> list[str]:
    # Listed when the check runs, so that attacks registered later count too.
    return list_attacks(gradient=True) if family is GRADIENT else list_attacks(family)


def _pairwise_check(
    code: str,
    later: Family,
    earlier: Family | None,
    tolerated: float,
    minimum: int,
    min_effect: float,
) -> None:
    def judge(evidence: Evidence) -> Judged:
        found = _pairwise(evidence, _kinds(later), _kinds(earlier), tolerated, minimum, min_effect)
        return Judged(*found)

    check(code)(judge)


for _row in PAIRWISE_CHECKS:
    _pairwise_check(*_row)


@check("margin-loss-beats-cross-entropy")
def margin_loss_beats_cross_entropy(evidence: Evidence) -> Judged:
    """PGD on a margin loss against PGD-CE, its peer, sample by sample (exact McNemar test).

    A saturated softmax starves the cross-entropy gradient, not the margin's: AutoAttack's
    reason for its DLR loss. Both run on every clean-correct sample, so the samples only
    PGD-CE breaks count against the margin loss; it fails when the margin loss breaks
    significantly and materially (at least 5 samples and 2 % of all) more.
    """
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[Status] = []
    specs = {spec.label: spec for spec in suite.config.attacks} if suite else {}
    for outcome in suite.norms if suite else ():
        by_label = {record.label: record for record in outcome.attacks}
        for record in outcome.attacks:
            spec = specs.get(record.label)
            if spec is None or spec.peer_of is None or _family(record) is not Family.ITERATIVE:
                continue
            peer = by_label.get(spec.peer_of)
            if (
                spec.params.get("loss") not in ("cw", "dlr")
                or peer is None
                or peer.kind != record.kind
                or specs[spec.peer_of].params.get("loss", "ce") != "ce"
            ):
                continue
            correct = suite.clean_correct  # type: ignore[union-attr]
            total = int(correct.numel())
            for k, epsilon in enumerate(outcome.epsilons):
                margin, ce = record.success[k] & correct, peer.success[k] & correct
                only_margin, only_ce = int((margin & ~ce).sum()), int((ce & ~margin).sum())
                excess = only_margin - only_ce
                p_value = mcnemar_exact(only_margin, only_ce)
                material = excess >= max(5, 0.02 * total)
                statuses.append(_grade(only_margin >= 5, p_value < ALPHA, material))
                rows[f"{record.label}/{outcome.norm.value}/{epsilon:.6g}"] = {
                    "only_margin_loss": only_margin,
                    "only_cross_entropy": only_ce,
                    "share_of_samples": excess / total if total else 0.0,
                    "material_share": 0.02,
                    "p_value": p_value,
                    "peer": peer.label,
                }
    status = _worst(statuses)
    return Judged(status, rows)


@check("unbounded-attack-below-100")
def unbounded_attack(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[Status] = []
    for outcome in suite.norms if suite else ():
        sweep = outcome.sweep
        if sweep is None or outcome.unbounded_epsilon not in sweep.epsilons:
            continue
        k = sweep.epsilons.index(outcome.unbounded_epsilon)
        total = int(suite.num_samples)  # type: ignore[union-attr]
        survived = int((~sweep.success[k]).sum())
        rows[outcome.norm.value] = {
            "epsilon": outcome.unbounded_epsilon,
            "survived": survived,
            "samples": total,
            "success_rate": 1 - survived / total if total else None,
        }
        statuses.append(
            Status.FAIL
            if survived > max(1, 0.01 * total)
            else Status.WARN
            if survived
            else Status.PASS
        )
    status = _worst(statuses)
    return Judged(status, rows)


@check("success-not-increasing-with-epsilon")
def not_monotonic(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[Status] = []
    for outcome in suite.norms if suite else ():
        sweep = outcome.independent_sweep
        if sweep is None:
            continue
        # The independent runs cover a subsample only; judge them on its columns.
        success = sweep.success[:, sweep.sample_index]
        drops = []
        for k in range(len(sweep.epsilons) - 1):
            lost = int((success[k] & ~success[k + 1]).sum())
            gained = int((~success[k] & success[k + 1]).sum())
            p_value = mcnemar_exact(lost, gained)
            drops.append(
                {
                    "from": sweep.epsilons[k],
                    "to": sweep.epsilons[k + 1],
                    "lost": lost,
                    "gained": gained,
                    "p_value": p_value,
                }
            )
            if lost >= 3 and p_value < ALPHA:
                statuses.append(Status.FAIL)
            elif lost > gained and lost >= 2:
                statuses.append(Status.WARN)
        rate = success.double().mean(1)
        bounded = [k for k, e in enumerate(sweep.epsilons) if e != outcome.unbounded_epsilon]
        plateau = False
        if len(bounded) >= 2:
            last, previous = bounded[-1], bounded[-2]
            plateau = bool(rate[last] < 0.9 and rate[last] <= rate[previous] + 1e-12)
            if plateau:
                statuses.append(Status.WARN)
        rows[outcome.norm.value] = {
            "epsilons": list(sweep.epsilons),
            "success_rate": rate.tolist(),
            "samples": int(success.shape[1]),
            "steps": drops,
            "plateau_below_90": plateau,
        }
        statuses.append(Status.PASS)
    status = _worst(statuses)
    return Judged(status, rows)


def _gradient_records(suite: SuiteResult) -> list[AttackRecord]:
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


@check("vanishing-gradients")
def vanishing_gradients(evidence: Evidence) -> Judged:
    if evidence.probes.input_gradient_error:
        # The model raised when its input required grad: nothing was measured, and every
        # gradient attack will raise too (attack-failed names them).
        return Judged(
            Status.NOT_APPLICABLE,
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
            Status.FAIL,
            {"input_gradient_exists": False, "reason": evidence.probes.input_gradient_note},
            f"the input gradient does not exist: {evidence.probes.input_gradient_note}",
            remedy="The model's output does not depend differentiably on its input, so every "
            "gradient attack is blind: attack it with BPDA (a differentiable approximation of "
            "the cut operation) or gradient-free attacks, and report those",
        )
    suite = evidence.suite
    records = _gradient_records(suite) if suite else []
    norms = [r.result.gradient_stats.first_grad_norm.flatten() for r in records]  # type: ignore[union-attr]
    values = torch.cat(norms) if norms else torch.empty(0, device="cpu")
    values = values[~torch.isnan(values)]
    clean_zero = evidence.probes.clean_zero_gradient_fraction
    threshold = records[0].result.gradient_stats.vanishing_threshold if records else 1e-10  # type: ignore[union-attr]
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
    if zero > 0.05:
        status = Status.FAIL
    elif zero > 0.01 or vanishing > 0.25:
        status = Status.WARN
    else:
        status = Status.PASS
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
        for gradient_record in _gradient_records(suite):
            stats = gradient_record.result.gradient_stats  # type: ignore[union-attr]
            attack_grads += stats.nonfinite_gradients  # type: ignore[union-attr]
        hit = torch.zeros(suite.num_samples, dtype=torch.bool, device="cpu")
        for outcome in suite.norms:
            stages: list[tuple[AttackRecord | None, str]] = [(r, "") for r in outcome.attacks]
            stages += [(outcome.sweep, " (sweep)"), (outcome.independent_sweep, " (independent)")]
            for record, stage in stages:
                if record is None:
                    continue
                attack_logits += record.nonfinite_evaluations
                columns = record.nonfinite.cpu()
                hit |= columns.any(0)
                if record.nonfinite_evaluations or bool(columns.any()):
                    per_attack[f"{record.label}/{outcome.norm.value}{stage}"] = {
                        "epsilons": list(record.epsilons),
                        "samples": [int(v) for v in columns.sum(1)],
                        "evaluations": record.nonfinite_evaluations,
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
        Status.FAIL if bad else Status.PASS,
        rows,
        explanation,
    )


FD_TOLERATED_RATE = 0.01
"""Pairs an honest network may have disagreeing at every step: kinks on both sides of the
centre within the smallest step (0 of 1000 pairs measured on each of max-pool, batch-norm,
residual and GELU/softplus networks trained on MNIST and digits, i.e. below 0.3 % at 95 %)."""
FD_MATERIAL_RATE = 0.05
FD_MINIMUM = 5


@check("gradient-disagrees-with-finite-differences")
def finite_differences(evidence: Evidence) -> Judged:
    """The share of sample-direction pairs whose directional derivative disagrees with the
    central, forward and backward finite differences at every step size, against
    ``FD_TOLERATED_RATE`` by an exact one-sided binomial test; graded like the pairwise
    checks (significant and material: at least ``FD_MINIMUM`` pairs and ``FD_MATERIAL_RATE``)."""
    probes = evidence.probes
    if not probes.fd_applicable or probes.fd_informative == 0:
        reason = probes.fd_note if not probes.fd_applicable else "no pair changed measurably"
        return Judged(
            Status.NOT_APPLICABLE,
            {"reason": reason},
            f"not measured: {reason}",
            remedy="",
        )
    disagreeing, pairs = probes.fd_disagreeing, probes.fd_informative
    fraction = disagreeing / pairs
    p_value = binomial_tail(disagreeing, pairs, FD_TOLERATED_RATE)
    status = _grade(disagreeing >= FD_MINIMUM, p_value < ALPHA, fraction >= FD_MATERIAL_RATE)
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
            if ratio is not None and status in (Status.WARN, Status.FAIL)
            else ""
        ),
    )


@check("stochastic-model")
def stochastic_model(evidence: Evidence) -> Judged:
    """Repeated forward passes on the same inputs differ. When they change a decision on a
    clean input the classifier itself is random: a deterministic function never flips, so one
    flip proves it, without a threshold. Every accuracy the audit reports, clean and robust, is
    then a single draw of a random variable, judged by one pass, whatever EOT did for the
    gradients (reliability). Logits that differ without changing any decision only warn."""
    probes = evidence.probes
    rows = {
        "max_repeat_difference": probes.max_repeat_difference,
        "repeat_samples": probes.repeat_samples,
        "num_repeats": probes.num_repeats,
        "prediction_flips": probes.prediction_flips,
        "prediction_flip_fraction": probes.prediction_flip_fraction,
        "eot_samples": evidence.eot_samples,
    }
    if not probes.stochastic:
        return Judged(
            Status.PASS,
            rows,
            f"{probes.num_repeats} forward passes of {probes.repeat_samples} samples give "
            "identical logits",
            remedy="",
        )
    seen = (
        f"{probes.num_repeats} forward passes of {probes.repeat_samples} clean samples differ "
        f"(largest logit change {probes.max_repeat_difference:.3g})"
    )
    eot = f"gradients were averaged over {evidence.eot_samples} passes (EOT)"
    if probes.prediction_flips:
        return Judged(
            Status.FAIL,
            rows,
            f"{seen} and change the prediction of {probes.prediction_flips} "
            f"({probes.prediction_flip_fraction:.1%}): the classifier is random, so every "
            f"accuracy here is one draw judged by one pass; {eot}",
            remedy="Make the model deterministic at test time (eval() on every layer, no random "
            "transform in forward), or evaluate it as a randomised defence: robust accuracy as "
            "an expectation over many passes, with EOT attacks (AutoAttack's version='rand')",
        )
    return Judged(
        Status.WARN,
        rows,
        f"{seen} without changing a prediction; {eot}",
    )


@check("batch-dependent-outputs")
def batch_dependent_outputs(evidence: Evidence) -> Judged:
    """A sample's logits change with the other samples in its batch (batch norm in train mode,
    a max over the batch): the attacks batch samples, so they attack another function than the
    one evaluated. A deterministic model fails when any sample changes beyond the probe's
    relative tolerance; a stochastic one when two batched passes and two passes apart pair up
    by composition significantly more often than the 1/3 of exchangeable passes (exact
    binomial test)."""
    probes = evidence.probes
    rows: dict[str, Any] = {
        "composition": probes.batch_composition,
        "batch_size": probes.batch_size,
        "samples": probes.batch_compared,
        "max_relative_difference": probes.batch_max_relative_difference,
        "tolerance": probes.batch_tolerance,
        "differing": probes.batch_differing,
        "prediction_flips": probes.batch_prediction_flips,
    }
    if probes.batch_compared == 0:
        return Judged(
            Status.NOT_APPLICABLE,
            rows,
            "not measured: the model raised on every sample alone and in pairs"
            if probes.batch_composition == "refused"
            else "no sample had finite logits in both compositions",
            remedy="",
        )
    if probes.stochastic:
        compared, grouped = probes.batch_grouped_compared, probes.batch_grouped
        p_value = binomial_tail(grouped, compared, 1 / 3) if compared else 1.0
        rows.update(grouped=grouped, compared=compared, chance=1 / 3, p_value=p_value)
        dependent = p_value < ALPHA
        seen = (
            f"{grouped} of {compared} samples' passes pair up by batch composition (two "
            f"batched, two alone; chance: 1/3 of samples; p = {p_value:.2g})"
        )
    else:
        dependent = probes.batch_differing > 0
        seen = (
            f"{probes.batch_differing} of {probes.batch_compared} samples changed their logits "
            f"by more than {probes.batch_tolerance:g} (relative) when evaluated "
            f"{'alone' if probes.batch_composition == 'single' else 'in a pair'} instead of in "
            f"the batch (largest change {probes.batch_max_relative_difference:.3g}; "
            f"{probes.batch_prediction_flips} prediction(s) flipped)"
        )
    return Judged(
        Status.FAIL if dependent else Status.PASS,
        rows,
        seen if dependent else None,
    )


@check("model-in-train-mode")
def train_mode(evidence: Evidence) -> Judged:
    modules = evidence.probes.train_mode_modules
    return Judged(
        Status.FAIL if modules else Status.PASS,
        {"modules": list(modules)},
        f"{len(modules)} module(s) stay in training mode after eval(): {', '.join(modules[:5])}"
        if modules
        else None,
    )


@check("probability-outputs")
def probability_outputs(evidence: Evidence) -> Judged:
    probability = evidence.probes.probability_outputs
    return Judged(
        Status.FAIL if probability else Status.PASS,
        {"probability_outputs": probability},
    )


def _broken_late(record: AttackRecord, k: int, tail: int) -> int | None:
    """Samples this attack broke in its last ``tail`` steps at epsilon ``k``, or None when the
    attack does not say at which step it broke some of them.

    Read from ``success_step``, the iteration (of the run, restart or target, that broke the
    sample) at which the engine first saw it misclassified: a sample counts when that
    iteration is among the last ``tail`` of the ``T`` steps.
    """
    broken = record.attacked[k] & record.success[k]
    steps = record.success_step[k][broken]
    if bool((steps < 0).any()):
        return None
    num_steps = record.loss_trace.shape[1] - 1
    return int((steps > num_steps - tail).sum())


@check("attack-not-converged")
def not_converged(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[Status] = []
    for outcome in suite.norms if suite else ():
        for record in outcome.attacks:
            if not _family(record).gradient or record.loss_trace.shape[1] < 11:
                continue
            for k, epsilon in enumerate(record.epsilons):
                alive = record.attacked[k] & ~record.success[k]
                if int(alive.sum()) == 0:
                    continue
                trace = record.loss_trace[k][:, alive].double().nanmean(1)
                steps = trace.shape[0] - 1
                tail = max(1, steps // 10)
                total_rise = float(trace[-1] - trace[0])
                tail_rise = float(trace[-1] - trace[-1 - tail])
                rising = tail_rise > 0.01 * max(abs(total_rise), 1e-12) and tail_rise > 1e-3
                late = _broken_late(record, k, tail)
                attacked = int(record.attacked[k].sum())
                # A loss that creeps up on samples no step can break is not worth more steps:
                # where the step of each success is known, the attack must also still have
                # been breaking a material number of samples in its last 10 % of steps.
                still_breaking = late is None or late >= max(5, 0.02 * attacked)
                rows[f"{record.label}/{outcome.norm.value}/{epsilon:.6g}"] = {
                    "robust_samples": int(alive.sum()),
                    "total_rise": total_rise,
                    "last_10pct_rise": tail_rise,
                    "broken_in_last_10pct": late,
                    "attacked": attacked,
                }
                statuses.append(Status.WARN if rising and still_breaking else Status.PASS)
    status = _worst(statuses)
    return Judged(status, rows)


def _shows_last_iterate(record: AttackRecord) -> bool:
    """Whether a run can show a silent success: it went on after a sample's first success.
    That holds without early stopping, and for a targeted run that stops only at its target
    (a sample misclassified on the way may return). A run that stops a sample at its first
    success (untargeted with early stopping, the default and the independent sweep's, or
    targeted toward the top classes) leaves it at the iterate that fooled the model."""
    if record.result is None:
        return False
    params = record.result.params
    if params.get("early_stop") is False:
        return True
    return params.get("early_stop") is True and params.get("target_mode") not in (None, "top")


@check("silent-success")
def silent_success(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    early: list[str] = []
    statuses: list[Status] = []
    total = 0
    for outcome in suite.norms if suite else ():
        for record in (*outcome.attacks, outcome.independent_sweep):
            if record is None or _family(record) not in (Family.ITERATIVE, Family.TARGETED):
                continue
            where = "independent" if record is outcome.independent_sweep else "main"
            key = f"{record.label}/{outcome.norm.value}/{where}"
            if not _shows_last_iterate(record):
                early.append(key)
                continue
            silent = record.success & record.attacked & ~record.last_success
            count, attacked = int(silent.sum()), int(record.attacked.sum())
            total += count
            rows[key] = {"silent": count, "attacked": attacked}
            # Material when a last-iterate evaluation would overstate robust accuracy by at
            # least 5 samples and 2 % of those attacked, the bar of the other checks.
            statuses.append(Status.WARN if count >= max(5, 0.02 * attacked) else Status.PASS)
    status = _worst(statuses)
    if not rows:
        explanation = (
            "not observable: every iterative run stopped each sample at its first success, so "
            "its last iterate fooled the model by construction"
        )
    elif status == Status.WARN:
        explanation = (
            f"{total} sample(s) were fooled by an intermediate iterate but not by the last one; "
            "they are counted as broken here, but a last-iterate evaluation would miss them"
        )
    else:
        explanation = (
            f"{total} sample(s) fooled only by an intermediate iterate, too few to matter "
            "(all are counted as broken here)"
        )
    return Judged(
        status,
        {"samples": rows, "total": total, "early_stopped": early},
        explanation,
    )


@check("attack-failed")
def attack_failed(evidence: Evidence) -> Judged:
    """Every stage of the suite that raised (failed) or could not run (not applicable).

    A failed attack broke nothing because it did not run: the samples it would have attacked
    count as robust, so every robust accuracy at its norm and epsilon is an upper bound and the
    evaluation is incomplete. One that does not apply (a gradient attack on a model without an
    input gradient) leaves the worst case to the attacks that ran: listed, not flagged here
    (``vanishing-gradients`` fails a model without an input gradient). Each run's error is the
    one line of its message that says what failed (``core.boundary.error_line``); the run's
    record in the suite keeps the whole message.
    """
    suite = evidence.suite
    if suite is None:
        return Judged(
            Status.FAIL,
            {"failed": [], "not_applicable": []},
            "no attack ran at all",
            remedy="Run the attack suite; without it there is no robust accuracy to report",
        )
    failed: list[dict[str, Any]] = []
    not_applicable: list[dict[str, Any]] = []
    for outcome in suite.norms:
        for failure in outcome.failures:
            row = {
                "norm": outcome.norm.value,
                "stage": failure.stage,
                "attack": failure.label,
                "epsilon": failure.epsilon,
                # One line: the run's record in the document keeps the whole message.
                "message": error_line(failure.message),
            }
            (failed if failure.status == "failed" else not_applicable).append(row)
    evidence_rows = {"failed": failed, "not_applicable": not_applicable}

    def where(row: dict[str, Any]) -> str:
        at = "" if row["epsilon"] is None else f" eps {row['epsilon']:.4g}"
        stage = "" if row["stage"] == "attack" else f" ({row['stage']})"
        return f"{row['attack']}{stage} at {row['norm']}{at}"

    if failed:
        first = failed[0]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        return Judged(
            Status.FAIL,
            evidence_rows,
            f"{len(failed)} attack run(s) failed, so the samples they would have attacked "
            f"count as robust and the robust accuracy is an upper bound: {where(first)} raised "
            f"{first['message']}{more}",
        )
    if not_applicable:
        names = sorted({where(row) for row in not_applicable})
        return Judged(
            Status.PASS,
            evidence_rows,
            f"no attack failed; {len(not_applicable)} attack run(s) could not apply "
            f"({not_applicable[0]['message']}): {', '.join(names[:4])}"
            f"{' ...' if len(names) > 4 else ''}, so the reliable robust accuracy is the worst "
            "case over the attacks that ran (vanishing-gradients judges a missing gradient)",
            remedy="",
        )
    return Judged(
        Status.PASS,
        evidence_rows,
        None,
        remedy="",
    )


def run_checks(evidence: Evidence) -> list[Finding]:
    """Every registered check, in registration order."""
    return [function(evidence) for function in CHECKS.values()]


INCOMPLETE = "evaluation incomplete"
"""The verdict's opening words when an attack failed: its robust accuracies are upper bounds."""


def verdict(findings: list[Finding]) -> str:
    """``evaluation incomplete: ...`` (an attack failed), ``evaluation unreliable``,
    ``suspected gradient masking (N red flags)`` or ``no sign of gradient masking``."""
    failed = next(
        (f for f in findings if f.code == "attack-failed" and f.status is Status.FAIL), None
    )
    if failed is not None:
        runs = len(failed.evidence.get("failed", ())) or 1
        return (
            f"{INCOMPLETE}: {runs} attack run{'s' if runs > 1 else ''} failed, robust accuracy "
            "is an upper bound"
        )
    if any(f.status is Status.FAIL and not f.masking for f in findings):
        return "evaluation unreliable"
    flags = sum(1 for f in findings if f.status is Status.FAIL and f.masking)
    if flags:
        return f"suspected gradient masking ({flags} red flag{'s' if flags > 1 else ''})"
    return "no sign of gradient masking"

"""The checks that compare attacks: a weaker attack (one step, black box, random search,
targeted, the margin loss) that breaks samples a stronger one left robust, an unbounded attack
that does not reach 100 %, and success that does not grow with epsilon.

Each comparison is paired (see ``analysis.findings``): noise on 1000 samples raises nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analysis.findings import Evidence, Judged, attack_family, check, grade, worst_status
from attacks import AttackOutcome, Family, list_attacks
from core.checks import ALPHA, CHECKS, run_key
from core.document import FindingStatus
from core.stats import binomial_tail, mcnemar_exact


def _excess_breaks(
    later: AttackOutcome,
    earlier_robust_count: int,
    k: int,
    tolerated: float,
    minimum: int,
    min_effect: float,
) -> tuple[FindingStatus, dict[str, Any]]:
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
        grade(broken >= minimum, p_value < ALPHA, effect >= min_effect)
        if attempted
        else FindingStatus.NOT_APPLICABLE
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
) -> tuple[FindingStatus, dict[str, Any]]:
    """For each norm and epsilon: did an attack of ``later_kinds`` break samples that every
    attack of ``earlier_kinds`` (run before it) left robust, beyond ``tolerated``?"""
    suite = evidence.suite
    if suite is None:
        return FindingStatus.NOT_APPLICABLE, {}
    statuses: list[FindingStatus] = []
    rows: dict[str, Any] = {}
    for outcome in suite.norms:
        attacks = list(outcome.attacks)
        for k, epsilon in enumerate(outcome.epsilons):
            for i, later in enumerate(attacks):
                if later.kind not in later_kinds:
                    continue
                before = [r for r in attacks[:i] if r.kind in earlier_kinds]
                if not before:
                    continue
                robust = suite.clean_correct.clone()
                for attack in before:
                    robust &= ~attack.success[k]
                status, row = _excess_breaks(
                    later, int(robust.sum()), k, tolerated, minimum, min_effect
                )
                row["after"] = [r.label for r in before]
                rows[run_key(later.label, outcome.norm.value, epsilon)] = row
                statuses.append(status)
    return worst_status(statuses), rows


GRADIENT = None
"""In ``PAIRWISE_CHECKS``: every gradient attack, whatever its family."""


def _pairwise_row(
    code: str, later: Family, earlier: Family | None
) -> tuple[str, Family, Family | None, float, int, float]:
    thresholds = CHECKS[code].thresholds
    return (
        code,
        later,
        earlier,
        thresholds["tolerated_rate"],
        int(thresholds["minimum"]),
        thresholds["material_share"],
    )


PAIRWISE_CHECKS: tuple[tuple[str, Family, Family | None, float, int, float], ...] = (
    # code, later attacks' family, earlier attacks' family, tolerated rate, minimum samples,
    # material share of all samples (see _excess_breaks), the numbers declared in core.checks
    _pairwise_row("one-step-beats-iterative", Family.ONE_STEP, Family.ITERATIVE),
    _pairwise_row("black-box-beats-white-box", Family.BLACK_BOX, GRADIENT),
    _pairwise_row("random-search-beats-gradient", Family.RANDOM, GRADIENT),
    _pairwise_row("targeted-beats-untargeted", Family.TARGETED, Family.ITERATIVE),
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


_MARGIN = CHECKS["margin-loss-beats-cross-entropy"].thresholds
_MARGIN_MINIMUM = int(_MARGIN["minimum"])
_MARGIN_SHARE = _MARGIN["material_share"]


@check("margin-loss-beats-cross-entropy")
def margin_loss_beats_cross_entropy(evidence: Evidence) -> Judged:
    """PGD on a margin loss against PGD-CE, its peer, sample by sample (exact McNemar test).

    A saturated softmax starves the cross-entropy gradient, not the margin's: AutoAttack's
    reason for its DLR loss. Both run on every clean-correct sample, so the samples only
    PGD-CE breaks count against the margin loss; it fails when the margin loss breaks
    significantly and materially (at least ``_MARGIN_MINIMUM`` samples and ``_MARGIN_SHARE``
    of all) more.
    """
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[FindingStatus] = []
    specs = {spec.label: spec for spec in suite.config.attacks} if suite else {}
    for outcome in suite.norms if suite else ():
        by_label = {attack.label: attack for attack in outcome.attacks}
        for attack in outcome.attacks:
            spec = specs.get(attack.label)
            if (
                spec is None
                or spec.peer_of is None
                or attack_family(attack) is not Family.ITERATIVE
            ):
                continue
            peer = by_label.get(spec.peer_of)
            if (
                spec.params.get("loss") not in ("cw", "dlr")
                or peer is None
                or peer.kind != attack.kind
                or specs[spec.peer_of].params.get("loss", "ce") != "ce"
            ):
                continue
            correct = suite.clean_correct  # type: ignore[union-attr]
            total = int(correct.numel())
            for k, epsilon in enumerate(outcome.epsilons):
                margin, ce = attack.success[k] & correct, peer.success[k] & correct
                only_margin, only_ce = int((margin & ~ce).sum()), int((ce & ~margin).sum())
                excess = only_margin - only_ce
                p_value = mcnemar_exact(only_margin, only_ce)
                material = excess >= max(_MARGIN_MINIMUM, _MARGIN_SHARE * total)
                statuses.append(grade(only_margin >= _MARGIN_MINIMUM, p_value < ALPHA, material))
                rows[run_key(attack.label, outcome.norm.value, epsilon)] = {
                    "only_margin_loss": only_margin,
                    "only_cross_entropy": only_ce,
                    "share_of_samples": excess / total if total else 0.0,
                    "material_share": _MARGIN_SHARE,
                    "p_value": p_value,
                    "peer": peer.label,
                }
    status = worst_status(statuses)
    return Judged(status, rows)


_UNBOUNDED = CHECKS["unbounded-attack-below-100"].thresholds


@check("unbounded-attack-below-100")
def unbounded_attack(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[FindingStatus] = []
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
            FindingStatus.FAIL
            if survived > max(_UNBOUNDED["fail_minimum"], _UNBOUNDED["fail_share"] * total)
            else FindingStatus.WARN
            if survived
            else FindingStatus.PASS
        )
    status = worst_status(statuses)
    return Judged(status, rows)


_MONOTONIC = CHECKS["success-not-increasing-with-epsilon"].thresholds
_TIE = 1e-12
"""Rounding slack when comparing two success rates (not a threshold)."""


@check("success-not-increasing-with-epsilon")
def not_monotonic(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[FindingStatus] = []
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
            if lost >= _MONOTONIC["minimum"] and p_value < ALPHA:
                statuses.append(FindingStatus.FAIL)
            elif lost > gained and lost >= _MONOTONIC["warn_minimum"]:
                statuses.append(FindingStatus.WARN)
        rate = success.double().mean(1)
        bounded = [k for k, e in enumerate(sweep.epsilons) if e != outcome.unbounded_epsilon]
        plateau = False
        if len(bounded) >= 2:
            last, previous = bounded[-1], bounded[-2]
            plateau = bool(
                rate[last] < _MONOTONIC["plateau"] and rate[last] <= rate[previous] + _TIE
            )
            if plateau:
                statuses.append(FindingStatus.WARN)
        rows[outcome.norm.value] = {
            "epsilons": list(sweep.epsilons),
            "success_rate": rate.tolist(),
            "samples": int(success.shape[1]),
            "steps": drops,
            "plateau_below_90": plateau,
        }
        statuses.append(FindingStatus.PASS)
    status = worst_status(statuses)
    return Judged(status, rows)

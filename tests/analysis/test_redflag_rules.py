"""The decision rules behind the checks, on hand-built evidence with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import binom

from analysis.comparechecks import _excess_breaks
from analysis.redflags import (
    FindingStatus,
    margin_loss_beats_cross_entropy,
    silent_success,
)
from analysis.runchecks import _broken_late
from attacks import AttackSpec, Norm


def _record(broken: int, attempted: int, total: int) -> SimpleNamespace:
    success = torch.zeros(1, total, dtype=torch.bool)
    attacked = torch.zeros(1, total, dtype=torch.bool)
    attacked[0, :attempted] = True
    success[0, :broken] = True
    return SimpleNamespace(success=success, attacked=attacked)


@pytest.mark.parametrize(
    ("broken", "attempted", "total", "tolerated", "expected"),
    [
        (6, 135, 450, 0.10, FindingStatus.PASS),  # below the tolerated rate
        (
            10,
            100,
            1000,
            0.01,
            FindingStatus.WARN,
        ),  # significant, but 1 % of samples is not material
        (12, 200, 300, 0.05, FindingStatus.WARN),  # material (4 %), but not significant
        (30, 200, 300, 0.05, FindingStatus.FAIL),  # significant and material
        (4, 4, 10, 0.01, FindingStatus.PASS),  # fewer than the minimum
        (0, 0, 10, 0.01, FindingStatus.NOT_APPLICABLE),
    ],
)
def test_excess_breaks_fails_when_significant_and_material(
    broken, attempted, total, tolerated, expected
):
    status, row = _excess_breaks(
        _record(broken, attempted, total), attempted, 0, tolerated, minimum=5, min_effect=0.02
    )
    assert status == expected
    if attempted:
        # The exact one-sided binomial tail P(X >= broken), X ~ Bin(attempted, tolerated).
        assert math.isclose(row["p_value"], binom.sf(broken - 1, attempted, tolerated))
        assert row["share_of_samples"] == broken / total


def _stepped_record(steps: list[int]) -> SimpleNamespace:
    """Ten steps; ``steps`` is each sample's ``success_step`` (-1 robust, -2 unknown)."""
    success_step = torch.tensor([steps])
    trace = torch.zeros(1, 11, len(steps))
    return SimpleNamespace(
        kind="pgd",
        loss_trace=trace,
        success=success_step != -1,
        attacked=torch.ones(1, len(steps), dtype=torch.bool),
        success_step=success_step,
    )


def test_broken_late_counts_successes_in_the_last_steps():
    # Broken at iterates 3, 9, 10 and 10, one left robust, one a clean error (0).
    record = _stepped_record([3, 9, 10, -1, 10, 0])
    assert _broken_late(record, 0, 1) == 2
    assert _broken_late(record, 0, 2) == 3
    assert _broken_late(record, 0, 8) == 4
    # A clean error is not attacked, so it never counts, whatever its step.
    record.attacked[0, 5] = False
    assert _broken_late(record, 0, 11) == 4


def test_broken_late_is_unknown_when_a_step_is_unknown():
    assert _broken_late(_stepped_record([3, -2, -1]), 0, 1) is None
    # Unknown steps of samples the attack did not break do not matter.
    record = _stepped_record([3, -2, -1])
    record.attacked[0, 1] = False
    assert _broken_late(record, 0, 8) == 1


def _silent_evidence(
    silent: int, attacked: int, early_stop: bool = False, target_mode: str | None = None
) -> SimpleNamespace:
    success = torch.zeros(1, 400, dtype=torch.bool)
    success[0, :attacked] = True
    last_success = success.clone()
    last_success[0, :silent] = False
    record = SimpleNamespace(
        kind="pgd",
        label="pgd-ce",
        success=success,
        last_success=last_success,
        attacked=success,
        result=SimpleNamespace(params={"early_stop": early_stop, "target_mode": target_mode}),
    )
    outcome = SimpleNamespace(attacks=(record,), independent_sweep=None, norm=Norm.LINF)
    return SimpleNamespace(suite=SimpleNamespace(norms=(outcome,)))


@pytest.mark.parametrize(
    ("silent", "attacked", "expected"),
    [
        (0, 300, FindingStatus.PASS),
        (4, 100, FindingStatus.PASS),
        (5, 300, FindingStatus.PASS),
        (6, 300, FindingStatus.WARN),
    ],
)
def test_silent_success_warns_when_material(silent, attacked, expected):
    finding = silent_success(_silent_evidence(silent, attacked))
    assert finding.status == expected
    assert finding.evidence["total"] == silent
    assert finding.evidence["samples"]["pgd-ce/linf/main"] == {
        "silent": silent,
        "attacked": attacked,
    }


@pytest.mark.parametrize("target_mode", [None, "top"])
def test_silent_success_is_not_observable_in_early_stopped_runs(target_mode):
    # A run that stops a sample at its first success keeps that iterate as its last: whatever
    # its last_success says, it cannot show a silent success, and passing would claim it did.
    finding = silent_success(_silent_evidence(6, 300, early_stop=True, target_mode=target_mode))
    assert finding.status == FindingStatus.NOT_APPLICABLE
    assert finding.evidence == {"samples": {}, "total": 0, "early_stopped": ("pgd-ce/linf/main",)}
    assert "not observable" in finding.explanation


def test_silent_success_is_observable_in_runs_that_stop_at_their_target():
    # Early stopping of a targeted run waits for the target class: a sample misclassified on
    # the way, and correct again at the end, is a silent success.
    finding = silent_success(_silent_evidence(6, 300, early_stop=True, target_mode="random"))
    assert finding.status == FindingStatus.WARN
    assert finding.evidence["early_stopped"] == ()


def _peer_evidence(only_margin: int, only_ce: int, both: int, total: int) -> SimpleNamespace:
    ce = torch.zeros(1, total, dtype=torch.bool)
    cw = torch.zeros(1, total, dtype=torch.bool)
    ce[0, :both] = cw[0, :both] = True
    cw[0, both : both + only_margin] = True
    ce[0, both + only_margin : both + only_margin + only_ce] = True
    ce_record = SimpleNamespace(label="pgd-ce", kind="pgd", success=ce)
    cw_record = SimpleNamespace(label="pgd-cw", kind="pgd", success=cw)
    config = SimpleNamespace(
        attacks=(
            AttackSpec("pgd", "pgd-ce", {}),
            AttackSpec("pgd", "pgd-cw", {"loss": "cw"}, peer_of="pgd-ce"),
        )
    )
    outcome = SimpleNamespace(attacks=(ce_record, cw_record), epsilons=(0.1,), norm=Norm.LINF)
    suite = SimpleNamespace(
        config=config, norms=(outcome,), clean_correct=torch.ones(total, dtype=torch.bool)
    )
    return SimpleNamespace(suite=suite)


@pytest.mark.parametrize(
    ("only_margin", "only_ce", "total", "expected"),
    [
        (7, 10, 300, FindingStatus.PASS),  # peers that differ by chance
        (44, 6, 1000, FindingStatus.FAIL),  # significant, 3.8 % of samples
        (12, 2, 1000, FindingStatus.WARN),  # significant (p = 0.006), 1 % of samples
        (9, 3, 200, FindingStatus.WARN),  # material (3 %), not significant (p = 0.07)
        (4, 0, 100, FindingStatus.PASS),  # fewer than 5
    ],
)
def test_margin_loss_against_cross_entropy_is_a_paired_test(only_margin, only_ce, total, expected):
    finding = margin_loss_beats_cross_entropy(_peer_evidence(only_margin, only_ce, 20, total))
    assert finding.status == expected
    row = finding.evidence["pgd-cw/linf/0.1"]
    assert (row["only_margin_loss"], row["only_cross_entropy"]) == (only_margin, only_ce)
    exact = binom.sf(only_margin - 1, only_margin + only_ce, 0.5)
    assert math.isclose(row["p_value"], exact)


def test_vanishing_gradients_describes_each_population_on_its_own():
    """The clean samples' gradients and the attacks' first gradients are two populations:
    each gets its share of exact zeros and its share below the threshold, so that the second
    always includes the first."""
    from analysis.redflags import Evidence, vanishing_gradients

    clean = [0.0] * 9 + [1e-3]
    probes = SimpleNamespace(
        input_gradient_exists=True,
        input_gradient_error="",
        clean_zero_gradient_fraction=0.9,
        clean_gradient_norms=tuple(clean),
    )
    first = torch.tensor([[0.0] * 5 + [1e-12, 1e-11] + [1e-2] * 3 + [math.nan] * 2])
    stats = SimpleNamespace(vanishing_threshold=1e-10)
    record = SimpleNamespace(result=SimpleNamespace(gradient_stats=stats, first_grad_norm=first))
    suite = SimpleNamespace(norms=[SimpleNamespace(attacks=[record], sweep=None)])
    finding = vanishing_gradients(Evidence(suite, probes))  # type: ignore[arg-type]
    assert finding.explanation == (
        "clean samples: 90.0% of 10 input gradients exactly zero, 90.0% below 1e-10; "
        "attacks' first steps: 50.0% of 10 input gradients exactly zero, 70.0% below 1e-10"
    )
    assert finding.status == FindingStatus.FAIL  # 90 % exact zeros, above 5 %
    evidence = finding.evidence
    assert (evidence["clean_zero_fraction"], evidence["clean_vanishing_fraction"]) == (0.9, 0.9)
    assert (evidence["attack_zero_fraction"], evidence["vanishing_fraction"]) == (0.5, 0.7)
    assert (evidence["clean_measured"], evidence["measured"]) == (10, 10)

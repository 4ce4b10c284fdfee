"""The declarations of the checks: the words that state a check's condition agree with the
numbers it compares against."""

from __future__ import annotations

import re

import pytest

from core.checks import ALPHA, CHECKS, word

_NUMBER = re.compile(r"10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+|\d+/\d+|\d+(?:\.\d+)?")
"""A number as the words of a check write it: ``10⁻³``, ``1/3``, ``0.01``, ``5``."""

STATED_SETTINGS = {"stochastic-model": {"8"}}
"""Numbers a condition states that are settings, not thresholds: the passes a stochastic
model's gradients are averaged over (``analysis.config.EOT_SAMPLES``, tested there)."""


def _renderings(value: float) -> set[str]:
    """``value`` as any style of :func:`word` writes it, without the percent sign."""
    styles = ["", "points", "fraction"] + (["power"] if value > 0 else [])
    return {word(value, style) for style in styles}


@pytest.mark.parametrize("code", list(CHECKS))
def test_every_number_of_a_condition_is_a_declared_threshold(code: str) -> None:
    spec = CHECKS[code]
    allowed = set().union(*(_renderings(v) for v in spec.thresholds.values()))
    allowed |= STATED_SETTINGS.get(code, set())
    stated = _NUMBER.findall(spec.fails_when)
    assert not [n for n in stated if n not in allowed], (spec.fails_when, dict(spec.thresholds))


def test_a_condition_that_states_a_significance_level_declares_it() -> None:
    for code, spec in CHECKS.items():
        if "α =" in spec.fails_when:
            assert spec.thresholds.get("alpha") == ALPHA, code
            assert f"α = {word(ALPHA)}" in spec.fails_when, code


@pytest.mark.parametrize(
    ("code", "name", "words"),
    [
        ("one-step-beats-iterative", "tolerated_rate", "Fails above 1 % of the samples"),
        ("black-box-beats-white-box", "material_share", "and 2 % of all samples"),
        ("targeted-beats-untargeted", "tolerated_rate", "Fails above 10 % of the samples"),
        ("low-clean-accuracy", "accuracy_gap", "(5 points and at least 5 samples)"),
        ("vanishing-gradients", "warn_vanishing", "more than 25 % are below"),
        ("success-not-increasing-with-epsilon", "plateau", "a plateau below 90 % success"),
        ("batch-dependent-outputs", "tolerance", "Fails above 10⁻³ relative change"),
        ("batch-dependent-outputs", "chance", "the 1/3 of exchangeable passes"),
        ("gradient-disagrees-with-finite-differences", "tolerance", "more than 10 % disagree"),
        ("attack-not-converged", "tail_share", "over the last 10 % of PGD steps"),
    ],
)
def test_the_words_are_formatted_from_the_threshold(code: str, name: str, words: str) -> None:
    spec = CHECKS[code]
    assert name in spec.thresholds
    assert words in spec.statistic + " " + spec.fails_when


def test_word_styles() -> None:
    assert word(0.01) == "0.01"
    assert word(5) == "5"
    assert word(0.01, "%") == "1 %"
    assert word(0.1, "%") == "10 %"
    assert word(0.07, "%") == "7 %"
    assert word(0.05, "points") == "5"
    assert word(1 / 3, "fraction") == "1/3"
    assert word(1e-3, "power") == "10⁻³"
    with pytest.raises(ValueError, match="unknown style"):
        word(0.5, "percent")


def test_thresholds_are_read_only() -> None:
    with pytest.raises(TypeError):
        CHECKS["silent-success"].thresholds["minimum"] = 1  # type: ignore[index]


def test_the_verdicts_red_flags_are_the_failed_masking_checks() -> None:
    from core.checks import red_flags
    from core.document import WARN_OR_FAIL, Finding

    def finding(code: str, status: str, kind: str | None) -> Finding:
        return Finding(
            code=code,
            title=None,
            status=status,
            evidence=None,
            explanation="",
            remedy=None,
            kind=kind,  # type: ignore[arg-type]
        )

    findings = [
        finding("a", "fail", "masking"),
        finding("b", "warn", "masking"),
        finding("c", "fail", "reliability"),
        finding("d", "pass", "masking"),
        finding("e", "fail", None),  # a baseline's finding: its kind is not kept
    ]
    assert [f.code for f in red_flags(findings)] == ["a"]
    assert [f.code for f in findings if f.status in WARN_OR_FAIL] == ["a", "b", "c", "e"]

"""What the red-flag checks share: the evidence they read, what a check judges and the finding
it becomes (the document's record, ``core.document.Finding``), the registry of checks, and the
grading of a paired excess.

Comparisons between attacks are paired: in the suite every attack runs only on the samples
that the attacks before it left robust, so "attack B broke samples that A missed" is a count
of discordant samples, tested with an exact one-sided binomial test (at ``core.checks.ALPHA``)
against a small tolerated rate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analysis.conventions import ConventionTrial
from attacks import AttackOutcome, Family, SuiteResult, registry
from core.checks import CHECKS
from core.document import WARN_OR_FAIL, Finding, FindingStatus, Probes, as_read

_ORDER = {
    FindingStatus.NOT_APPLICABLE: 0,
    FindingStatus.PASS: 1,
    FindingStatus.WARN: 2,
    FindingStatus.FAIL: 3,
}


@dataclass(frozen=True)
class Evidence:
    """Everything the checks read.

    Attributes:
        suite: the attack suite's outcome (None when no attacks ran).
        probes: direct measurements of the model (``analysis.probes.probe_model``).
        eot_samples: forward passes per gradient the suite used (1 = no EOT).
        num_classes: the model's number of classes (None: unknown).
        recorded_clean_accuracy: the clean accuracy the checkpoint records from its training
            (on the dataset's test split), or None.
        conventions: the model's clean correctness under other input conventions
            (``analysis.conventions``).
    """

    suite: SuiteResult | None
    probes: Probes
    eot_samples: int = 1
    num_classes: int | None = None
    recorded_clean_accuracy: float | None = None
    conventions: tuple[ConventionTrial, ...] = ()


@dataclass(frozen=True)
class Judged:
    """What a check found: its status, the numbers behind it, and, where the check words the
    case itself, its sentence and remedy (None: the ones declared in ``core.checks``)."""

    status: FindingStatus
    evidence: dict[str, Any]
    explanation: str | None = None
    remedy: str | None = None


Check = Callable[[Evidence], Finding]
CHECK_FUNCTIONS: dict[str, Check] = {}
"""Every registered check function, by code, in the order registered (``core.checks.CHECKS``
holds their declarations)."""


def check(code: str) -> Callable[[Callable[[Evidence], Judged]], Check]:
    """Register a check under ``code``, which ``core.checks`` declares: the finding (the
    document's record, its evidence as read back) takes its title, kind, default sentences and
    remedy from there."""
    spec = CHECKS[code]

    def register(judge: Callable[[Evidence], Judged]) -> Check:
        def run(evidence: Evidence) -> Finding:
            judged = judge(evidence)
            flagged = judged.status in WARN_OR_FAIL
            explanation = judged.explanation
            if explanation is None:
                explanation = spec.flagged if flagged else spec.passed
            remedy = spec.remedy if judged.remedy is None else judged.remedy
            return Finding(
                code=code,
                title=spec.title,
                status=FindingStatus(judged.status).value,
                evidence=as_read(judged.evidence),
                explanation=explanation,
                remedy=remedy,
                kind="masking" if spec.masking else "reliability",
            )

        functools.update_wrapper(run, judge)  # its name and docstring
        CHECK_FUNCTIONS[code] = run
        return run

    return register


def worst_status(statuses: list[FindingStatus]) -> FindingStatus:
    return max(statuses, key=_ORDER.__getitem__, default=FindingStatus.NOT_APPLICABLE)


def attack_family(attack: AttackOutcome) -> Family:
    return registry.get(attack.kind).family


def grade(enough: bool, significant: bool, material: bool) -> FindingStatus:
    """Fail on an excess that is significant and material, warn on one that is only one of
    the two, pass otherwise; ``enough``: at least the check's minimum number of samples."""
    if enough and significant and material:
        return FindingStatus.FAIL
    if enough and (significant or material):
        return FindingStatus.WARN
    return FindingStatus.PASS

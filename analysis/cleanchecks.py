"""The check of the clean accuracy: against the accuracy the checkpoint records from its
training, and against the model's accuracy under other input conventions."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from analysis.findings import Evidence, Judged, check, grade, worst_status
from core.checks import ALPHA, CHECKS
from core.document import FindingStatus
from core.stats import binomial_tail, mcnemar_exact

_THRESHOLDS = CHECKS["low-clean-accuracy"].thresholds
MATERIAL_ACCURACY_GAP = _THRESHOLDS["accuracy_gap"]
"""A clean accuracy this far (and at least ``MATERIAL_SAMPLES``) below the recorded one, or
below another input convention's, is material (``core.checks`` says why)."""
MATERIAL_SAMPLES = int(_THRESHOLDS["material_samples"])

MATERIAL_CONVENTION_GAIN = _THRESHOLDS["convention_gain"]
"""Another input convention that scores significantly better (Bonferroni over those tried)
by this share of the samples (and ``MATERIAL_SAMPLES``) fails (``core.checks`` says why)."""


def _clean_accuracy_parts(
    evidence: Evidence, correct: Tensor
) -> tuple[list[FindingStatus], list[str], dict[str, Any]]:
    """The three comparisons of ``low-clean-accuracy``: chance, the recorded accuracy and the
    other input conventions; their statuses, the sentences of those that did not pass, and
    the numbers."""
    n, hits = int(correct.numel()), int(correct.sum())
    accuracy = hits / n
    statuses: list[FindingStatus] = []
    seen: list[str] = []
    rows: dict[str, Any] = {"clean_accuracy": accuracy, "correct": hits, "samples": n}
    classes = evidence.num_classes
    if classes is not None and classes >= 2:
        chance = 1 / classes
        p_chance = binomial_tail(hits, n, chance)
        rows.update(num_classes=classes, chance=chance, chance_p_value=p_chance)
        if p_chance >= ALPHA:
            statuses.append(FindingStatus.FAIL)
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
        status = grade(
            expected_hits - hits >= MATERIAL_SAMPLES,
            p_recorded < ALPHA,
            shortfall >= MATERIAL_ACCURACY_GAP,
        )
        statuses.append(status)
        if status is not FindingStatus.PASS:
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
        better: list[tuple[tuple[int, bool, int], str, FindingStatus]] = []
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
                status = (
                    FindingStatus.FAIL
                    if gain / n >= MATERIAL_CONVENTION_GAIN
                    else FindingStatus.WARN
                )
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
            FindingStatus.NOT_APPLICABLE,
            {},
            "not measured: no clean evaluation ran",
            remedy="",
        )
    correct = suite.clean_correct
    statuses, seen, rows = _clean_accuracy_parts(evidence, correct)
    status = worst_status([FindingStatus.PASS, *statuses])
    if status is FindingStatus.PASS:
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

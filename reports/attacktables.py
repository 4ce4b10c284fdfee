"""The report's tables of the attacks: robust accuracy after each attack, the samples each
broke that the ones before it missed, and the input gradients the attacks saw."""

from __future__ import annotations

import pandas as pd

from core.document import OK, AttackRecord, AuditResult, NormResult, Proportion
from reports.cells import NOT_AVAILABLE, data_frame, interval, norm_label, reliable


def _columns(result: AuditResult) -> list[tuple[NormResult, int, str]]:
    """(norm section, epsilon index, column label) for every norm and epsilon, in order."""
    return [
        (section, k, norm_label(section.norm, epsilon))
        for section in result.robustness.norms
        for k, epsilon in enumerate(section.epsilons)
    ]


def _by_epsilon(
    rows: dict[str, list[str]], columns: list[tuple[NormResult, int, str]]
) -> pd.DataFrame:
    """The frame of a table with a column per norm and epsilon (:func:`_columns`), each
    column's group its norm."""
    groups = [norm_label(section.norm) for section, _, _ in columns]
    return data_frame(rows, [c for _, _, c in columns], "attack", groups)


def _attack_labels(result: AuditResult) -> list[str]:
    """Every attack label, in the order the attacks ran (the union over norms)."""
    labels: list[str] = []
    for section in result.robustness.norms:
        labels += [a.label for a in section.attacks if a.label not in labels]
    return labels


def _find(section: NormResult, label: str) -> AttackRecord | None:
    return next((a for a in section.attacks if a.label == label), None)


def new_breaks(result: AuditResult, section: NormResult, k: int) -> dict[str, int]:
    """Per attack, the clean-correct samples it broke at epsilon ``k`` that every attack before
    it missed. They sum to the clean-correct count minus the reliable robust count."""
    correct = result.clean_correct
    broken_before = [False] * len(correct)
    out = {}
    for record in section.attacks:
        hits = [s and c for s, c in zip(record.success[k], correct, strict=True)]
        out[record.label] = sum(h and not b for h, b in zip(hits, broken_before, strict=True))
        broken_before = [b or h for b, h in zip(broken_before, hits, strict=True)]
    return out


def alone_accuracy(result: AuditResult, record: AttackRecord, k: int) -> Proportion | None:
    """The robust accuracy of ``record`` on its own at epsilon ``k``, where it is known: the
    attack ran on (or had already broken, in a nested sweep) every clean-correct sample. None
    for an attack that ran only on what earlier attacks left robust."""
    correct = result.clean_correct
    covered = all(
        a or s or not c
        for a, s, c in zip(record.attacked[k], record.success[k], correct, strict=True)
    )
    if not covered or record.status_at(k) != OK:
        return None
    robust = sum(c and not s for c, s in zip(correct, record.success[k], strict=True))
    return Proportion.of(robust, len(correct))


def robust_accuracy_table(result: AuditResult) -> pd.DataFrame:
    """Robust accuracy, attack × norm (the NormOut thesis' tables 3.4/3.5): one row per attack
    with the accuracy after it (and every attack before it, AutoAttack's order), one column per
    norm and epsilon, each with its 95 % interval; first the clean accuracy, last the reliable
    worst case over all attacks."""
    columns = _columns(result)
    rows: dict[str, list[str]] = {"clean": [interval(result.clean_accuracy)] * len(columns)}
    for label in _attack_labels(result):
        cells = []
        for section, k, _ in columns:
            record = _find(section, label)
            if record is None:
                cells.append("not run")
            elif record.status_at(k) != OK:
                cells.append(record.status_at(k))
            else:
                cells.append(interval(record.robust_accuracy_after[k]))
        rows[label] = cells
    rows["reliable (worst case)"] = [reliable(section, k) for section, k, _ in columns]
    return _by_epsilon(rows, columns)


def who_broke_what_table(result: AuditResult) -> pd.DataFrame:
    """Per norm and epsilon, how many samples each attack broke that all the earlier attacks
    missed (the evidence behind the pairwise checks), with the samples it attacked; the last
    row is their sum, the clean-correct samples minus the reliably robust ones."""
    columns = _columns(result)
    labels = _attack_labels(result)
    rows: dict[str, list[str]] = {label: [] for label in labels}
    totals = []
    for section, k, _ in columns:
        counts = new_breaks(result, section, k)
        for label in labels:
            record = _find(section, label)
            if record is None:
                rows[label].append("not run")
                continue
            attempted = record.attempted[k] if record.attempted is not None else None
            rows[label].append(
                f"{counts[label]} of {attempted} attacked"
                if attempted is not None
                else str(counts[label])
            )
        totals.append(str(sum(counts.values())))
    rows["total broken"] = totals
    return _by_epsilon(rows, columns)


def gradient_table(result: AuditResult) -> pd.DataFrame:
    """Input-gradient health of each gradient attack: the share of first input gradients that
    are exactly zero and below the vanishing threshold, with the attack's loss."""
    rows: dict[str, list[str]] = {}
    for section in result.robustness.norms:
        for record in section.attacks:
            stats = record.gradient_stats
            if stats is None:
                continue
            loss = (record.params or {}).get("loss")
            rows[f"{record.label} ({norm_label(section.norm)})"] = [
                str(loss) if loss is not None else NOT_AVAILABLE,
                f"{stats.zero_fraction:.1%}",
                f"{stats.vanishing_fraction:.1%}",
                str(stats.nonfinite_gradients),
            ]
    return data_frame(
        rows, ["loss", "zero gradients", "vanishing gradients", "non-finite gradients"], "attack"
    )

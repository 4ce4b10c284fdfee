"""The audits a comparison holds, what PGD-CE overstates in each, and where they were not
audited alike.

A checkpoint whose PGD-CE robust accuracy is *far above* its reliable one is marked ⇑: the
gap (the samples PGD-CE left robust that a later attack broke, out of all evaluated samples)
has a 95 % Wilson interval whose lower end exceeds :data:`FAR_ABOVE` (10 percentage points).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.document import AttackRecord, AuditResult, NormResult, Proportion, read_result
from core.stats import wilson_interval
from reports.cells import NORM_NAMES
from reports.tables import alone_accuracy

FAR_ABOVE = 0.10
"""PGD-CE is far above the reliable robust accuracy when the lower end of the gap's 95 %
interval exceeds this share of the evaluated samples."""

FAR_MARK = "⇑"


@dataclass(frozen=True)
class Entry:
    """One compared document.

    Attributes:
        number: 1-based position, the key used in plots.
        label: the checkpoint's file stem (with the document's path where two share it).
        path: the document's path as given.
        result: the document.
    """

    number: int
    label: str
    path: str
    result: AuditResult


def entries(paths: Sequence[str | Path]) -> list[Entry]:
    """Read the documents; raises :class:`DocumentError` (one line) for a bad one."""
    results = [read_result(path) for path in paths]
    stems = [Path(r.provenance.checkpoint).stem for r in results]
    return [
        Entry(i + 1, stem if stems.count(stem) == 1 else f"{stem} ({path})", str(path), result)
        for i, (stem, path, result) in enumerate(zip(stems, paths, results, strict=True))
    ]


def present_norms(items: Sequence[Entry]) -> list[str]:
    present = {n.norm for e in items for n in e.result.robustness.norms}
    return [norm for norm in NORM_NAMES if norm in present]


def find_norm_section(entry: Entry, norm: str) -> NormResult | None:
    return next((n for n in entry.result.robustness.norms if n.norm == norm), None)


def _is_pgd_ce(record: AttackRecord) -> bool:
    params = record.params or {}
    return record.kind == "pgd" and params.get("loss", "ce") == "ce"


def pgd_ce(result: AuditResult, section: NormResult, k: int = 0) -> Proportion | None:
    """PGD-CE's robust accuracy on its own at epsilon ``k``: the first untargeted
    cross-entropy PGD of the norm, where it ran on every clean-correct sample; else None."""
    record = next((r for r in section.attacks if _is_pgd_ce(r)), None)
    return None if record is None else alone_accuracy(result, record, k)


def gap(result: AuditResult, section: NormResult, k: int = 0) -> tuple[float, float, float] | None:
    """How far PGD-CE overstates the reliable robust accuracy at epsilon ``k``: (share of all
    samples that PGD-CE left robust and a later attack broke, low, high of its 95 % Wilson
    interval). The reliable robust samples are a subset of PGD-CE's, so the gap is a count."""
    alone = pgd_ce(result, section, k)
    reliable = section.reliable_robust_accuracy[k]
    if alone is None or reliable.total == 0:
        return None
    count = alone.count - reliable.count
    return (count / reliable.total, *wilson_interval(count, reliable.total))


def far_above(result: AuditResult, section: NormResult, k: int = 0) -> bool:
    """Whether PGD-CE is far above the reliable robust accuracy (see :data:`FAR_ABOVE`)."""
    overstated = gap(result, section, k)
    return overstated is not None and overstated[1] > FAR_ABOVE


def suite_name(result: AuditResult) -> str:
    suite = (result.provenance.config or {}).get("suite") or {}
    return str(suite.get("name", "unknown"))


def _grouped(pairs: Iterable[tuple[str, Any]]) -> dict[Any, list[str]]:
    """Labels grouped by a key, in first-seen order."""
    groups: dict[Any, list[str]] = {}
    for label, key in pairs:
        groups.setdefault(key, []).append(label)
    return groups


def _listed(groups: dict[Any, list[str]], shown: Callable[[Any], str]) -> str:
    return "; ".join(f"{shown(k)}: {', '.join(v)}" for k, v in groups.items())


def comparability_warnings(items: Sequence[Entry]) -> list[str]:
    """One sentence per way in which the documents were not audited alike."""
    warnings = []
    datasets = _grouped((e.label, e.result.evaluation.dataset) for e in items)
    if len(datasets) > 1:
        warnings.append(
            "The checkpoints were evaluated on different datasets ("
            + _listed(datasets, str)
            + "): their accuracies measure different tasks."
        )
    samples = _grouped(
        (e.label, (e.result.evaluation.dataset, e.result.evaluation.indices)) for e in items
    )
    if len(samples) > len(datasets):
        warnings.append(
            "Some checkpoints of one dataset were audited on different samples ("
            + _listed(samples, lambda k: f"{k[0]}, {len(k[1])} samples from index {k[1][:1]}")
            + "): their accuracies are not paired, and differences include sampling noise."
        )
    suites = _grouped((e.label, suite_name(e.result)) for e in items)
    if len(suites) > 1:
        warnings.append(
            "The audits ran different presets or suites ("
            + _listed(suites, str)
            + "): weaker suites report higher robust accuracy."
        )
    for norm in present_norms(items):
        name = NORM_NAMES[norm]
        present = [(e.label, s) for e in items if (s := find_norm_section(e, norm)) is not None]
        epsilons = _grouped((label, s.epsilons) for label, s in present)
        if len(epsilons) > 1:
            warnings.append(
                f"The {name} epsilons differ ("
                + _listed(epsilons, lambda k: ", ".join(f"{x:g}" for x in k))
                + "): robust accuracies at different budgets are not comparable."
            )
        attacks = _grouped((label, tuple(a.label for a in s.attacks)) for label, s in present)
        if len(attacks) > 1:
            warnings.append(
                f"The {name} attack lists differ ("
                + _listed(attacks, lambda k: " → ".join(k))
                + "): reliable robust accuracies are worst cases over different attacks."
            )
    for norm in present_norms(items):
        lacking = [e.label for e in items if find_norm_section(e, norm) is None]
        if lacking:
            warnings.append(
                f"{', '.join(lacking)}: audited without {NORM_NAMES[norm]}, which the others have."
            )
    baselines = [e.label for e in items if e.result.baseline]
    if baselines:
        warnings.append(
            f"{', '.join(baselines)}: a gate baseline holds only what the gate reads; its "
            "curves, flatness and activation statistics are missing."
        )
    return warnings

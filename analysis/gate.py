"""The CI gate's comparison: an audit result against a baseline, and what fails.

A check fails when clean accuracy, the reliable robust accuracy (worst case over attacks) or
the robust accuracy after any attack drops beyond tolerance, or when a red-flag check fails
that did not fail in the baseline (a masking or a reliability check; a warning does not count).
The default tolerance is statistical: on the same samples (same indices) the drop is tested
with the paired (McNemar) 95 % interval, so a drop fails only if its interval lies wholly above
zero; on different samples an unpaired two-proportion interval is used. A fixed tolerated
drop (``max_drop``, a fraction) replaces it when given. A baseline made from another
checkpoint (sha256) or on other samples is refused unless allowed.

The command, ``python -m analysis.gate`` (``robaudit-gate``), is :mod:`commands.gate`; an
audit run with ``--baseline`` gates its own result the same way.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from attacks.worstcase import robust_after
from core.boundary import (
    atomic_write_bytes,
)
from core.document import (
    UNNAMED,
    AuditResult,
    DocumentError,
    Finding,
    FindingStatus,
    NormResult,
    read_document,
)
from core.stats import paired_drop_interval, unpaired_drop_interval

__all__ = [
    "Case",
    "GateOutcome",
    "check_same_evaluation",
    "compare",
    "read_baseline",
    "report_lines",
    "write_junit",
]


@dataclass(frozen=True)
class Case:
    """One gate check: its name, whether it passed, and why."""

    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class GateOutcome:
    cases: tuple[Case, ...]

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)


def read_baseline(path: Path) -> AuditResult:
    """Read a baseline (or a full audit document used as one) with the typed reader, from
    strict JSON.

    Raises:
        DocumentError: the file cannot be read, or a field the reader checks is missing or
            malformed; the message is one line naming the file and the field.
    """
    path = Path(path)
    if not path.exists():
        raise DocumentError(
            f"baseline {path} does not exist; make it once from an audit you trust: "
            f"python -m analysis.audit CHECKPOINT --baseline {path} --update-baseline (or "
            f"python -m analysis.gate RESULT {path} --update-baseline)"
        )
    if path.is_dir():
        raise DocumentError(f"baseline {path} is a folder; give the baseline's JSON file")
    return AuditResult.from_dict(read_document(path), path)


def check_same_evaluation(
    baseline: AuditResult,
    path: Path,
    *,
    checkpoint_sha256: str | None,
    dataset: str | None,
    indices: Sequence[int],
    allow_different: bool,
    weights_sha256: str | None = None,
) -> None:
    """Refuse a baseline made from another checkpoint or on other samples, unless allowed.

    The same checkpoint is the same file (sha256), or the same weights (the sha256 of the
    state_dict, which both a file's audit and ``audit_model`` record); tensors handed to
    ``audit_model`` without a dataset name compare with any dataset's (by their samples).

    Raises:
        DocumentError: the baseline's checkpoint, dataset or sample indices differ and
            ``allow_different`` is false, or the dataset differs at all (accuracies on
            different datasets do not compare).
    """
    before = baseline.provenance.checkpoint_sha256
    named = baseline.provenance.checkpoint or "an unnamed checkpoint"
    then = baseline.evaluation.dataset
    if UNNAMED in (then, dataset):
        then = None
    if then is not None and dataset is not None and then != dataset:
        raise DocumentError(
            f"baseline {path} was measured on {then}, this result on {dataset}: accuracies on "
            "different datasets do not compare; gate against a baseline of the same dataset"
        )
    if allow_different:
        return
    weights = baseline.provenance.weights_sha256
    same_weights = weights is not None and weights == weights_sha256
    if before != checkpoint_sha256 and not same_weights:
        raise DocumentError(
            f"baseline {path} was made from {named} (sha256 {str(before)[:12]}), this result "
            f"from a different checkpoint (sha256 {str(checkpoint_sha256)[:12]}); pass "
            "--allow-different-checkpoint to gate a new checkpoint (a retrained model) against it"
        )
    if baseline.evaluation.indices != tuple(indices):
        raise DocumentError(
            f"baseline {path} evaluated {len(baseline.evaluation.indices)} other samples "
            f"than this result ({len(indices)}; --num-samples or --seed differ); use the "
            "baseline's settings, or pass --allow-different-checkpoint to compare them unpaired"
        )


def _robust_after(norm: NormResult, clean: Sequence[bool]) -> dict[str, list[list[bool]]]:
    """Per attack label, the per-epsilon robust masks after that attack (cumulative), by the
    suite's own worst-case function on the decoded bits."""
    labels = [attack.label for attack in norm.attacks]
    if not labels:
        return {}
    successes = [
        torch.tensor(attack.success, dtype=torch.bool).reshape(len(norm.epsilons), len(clean))
        for attack in norm.attacks
    ]
    masks = robust_after(torch.tensor(clean, dtype=torch.bool), successes)
    return {label: mask.tolist() for label, mask in zip(labels, masks, strict=True)}


def _drop_case(
    name: str,
    before: Sequence[bool],
    after: Sequence[bool],
    paired: bool,
    max_drop: float | None,
) -> Case:
    n0, n1 = len(before), len(after)
    p0 = sum(before) / n0 if n0 else 0.0
    p1 = sum(after) / n1 if n1 else 0.0
    drop = p0 - p1
    if max_drop is not None:
        passed = drop <= max_drop + 1e-12
        rule = f"{'within' if passed else 'beyond'} the tolerated drop {max_drop:.4f}"
    else:
        if paired:
            only_before = sum(b and not a for b, a in zip(before, after, strict=True))
            only_after = sum(a and not b for b, a in zip(before, after, strict=True))
            low, high = paired_drop_interval(only_before, only_after, n0)
            kind = "paired"
        else:
            low, high = unpaired_drop_interval(sum(before), n0, sum(after), n1)
            kind = "unpaired"
        passed = low <= 0
        where = "includes 0 (no significant drop)" if passed else "lies above 0: a real drop"
        rule = f"its {kind} 95 % interval [{low:.4f}, {high:.4f}] {where}"
    return Case(name, passed, f"{p0:.4f} -> {p1:.4f} (drop {drop:+.4f}), {rule}")


def _complete_case(label: str, old: NormResult, k: int, new: NormResult, j: int) -> Case:
    """Every attack ran, now and in the baseline: a failed attack leaves the samples it would
    have attacked counted as robust, so its robust accuracies are upper bounds that no drop
    test may pass (a failed attack is evidence of nothing)."""
    name = f"every attack ran {label}"
    failed = new.failed_attacks(j)
    if failed or not new.tested(j):
        what = ", ".join(failed) if failed else "every attack"
        return Case(
            name,
            False,
            f"{what} failed in this result, so its robust accuracies are upper bounds; see the "
            "attack-failed finding, fix the cause and rerun",
        )
    before = old.failed_attacks(k)
    if before:
        return Case(
            name,
            False,
            f"{', '.join(before)} failed in the baseline, so its robust accuracies are upper "
            "bounds and no comparison with them means anything; remake the baseline from a "
            "complete audit (--update-baseline)",
        )
    return Case(name, True, "every attack ran, in this result and in the baseline")


def compare(
    document: AuditResult, baseline: AuditResult, max_drop: float | None = None
) -> GateOutcome:
    """Every gate check of ``document`` against ``baseline``."""
    paired = document.evaluation.indices == baseline.evaluation.indices
    clean_now, clean_then = document.clean_correct, baseline.clean_correct
    cases = [_drop_case("clean accuracy", clean_then, clean_now, paired, max_drop)]
    current_norms = {n.norm: n for n in document.robustness.norms}
    for old in baseline.robustness.norms:
        new = current_norms.get(old.norm)
        then = _robust_after(old, clean_then)
        now = {} if new is None else _robust_after(new, clean_now)
        for k, epsilon in enumerate(old.epsilons):
            label = f"{old.norm} eps {epsilon:.6g}"
            if new is None or epsilon not in new.epsilons:
                cases.append(
                    Case(f"reliable robust accuracy {label}", False, "missing from the result")
                )
                continue
            j = new.epsilons.index(epsilon)
            cases.append(_complete_case(label, old, k, new, j))
            cases.append(
                _drop_case(
                    f"reliable robust accuracy {label}",
                    old.robust[k],
                    new.robust[j],
                    paired,
                    max_drop,
                )
            )
            for attack, masks in then.items():
                if attack not in now:
                    cases.append(Case(f"{attack} {label}", False, "attack missing from the result"))
                    continue
                cases.append(
                    _drop_case(f"{attack} {label}", masks[k], now[attack][j], paired, max_drop)
                )
    before = {f.code: f.status for f in baseline.findings}
    cases += [_failing_check_case(f, before.get(f.code)) for f in document.findings]
    return GateOutcome(tuple(cases))


def _failing_check_case(finding: Finding, then: str | None) -> Case:
    """The case of one red-flag check (``then``: its status in the baseline, None where the
    baseline does not have it): it fails when the check fails now and did not in the baseline,
    whatever its kind. So a failed reliability check fails the gate too, not only the failed
    masking checks that the verdict counts as red flags; a warning never does."""
    newly_failing = finding.status == FindingStatus.FAIL and then != FindingStatus.FAIL
    return Case(
        f"red flag {finding.code}",
        not newly_failing,
        f"new red flag: {finding.explanation}"
        if newly_failing
        else f"{finding.status} (baseline: {'absent' if then is None else then})",
    )


def result_line(outcome: GateOutcome) -> str:
    """The gate's result in one line: ``gate: FAILED (7/9 checks; failed: clean accuracy,
    red flag vanishing-gradients)``."""
    failed = [c.name for c in outcome.cases if not c.passed]
    total = len(outcome.cases)
    if not failed:
        return f"gate: passed ({total}/{total} checks)"
    return f"gate: FAILED ({total - len(failed)}/{total} checks; failed: {', '.join(failed)})"


def report_lines(outcome: GateOutcome) -> list[str]:
    failed = [c for c in outcome.cases if not c.passed]
    total = len(outcome.cases)
    state = "passed" if not failed else "FAILED"
    lines = [f"  gate: {state} ({total - len(failed)}/{total} checks)"]
    lines += [f"    FAIL {c.name}: {c.message}" for c in failed]
    return lines


def write_junit(path: Path, outcome: GateOutcome) -> None:
    """JUnit XML with one test case per check."""
    failures = sum(not c.passed for c in outcome.cases)
    suite = ET.Element(
        "testsuite", name="robaudit-gate", tests=str(len(outcome.cases)), failures=str(failures)
    )
    for case in outcome.cases:
        element = ET.SubElement(suite, "testcase", classname="robaudit.gate", name=case.name)
        if case.passed:
            ET.SubElement(element, "system-out").text = case.message
        else:
            ET.SubElement(element, "failure", message=case.message).text = case.message
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))


if __name__ == "__main__":
    from commands.gate import main

    sys.exit(main())

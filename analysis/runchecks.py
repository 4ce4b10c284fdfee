"""The checks of the attack runs themselves: attacks still breaking samples in their last
steps, an attack that reports its last iterate rather than its successes, and attacks that
failed or did not apply."""

from __future__ import annotations

from typing import Any

from analysis.findings import Evidence, Judged, attack_family, check, worst_status
from attacks import AttackOutcome, Family
from core.boundary import error_line
from core.checks import CHECKS, run_key
from core.document import FAILED, FindingStatus


def _broken_late(attack: AttackOutcome, k: int, tail: int) -> int | None:
    """Samples this attack broke in its last ``tail`` steps at epsilon ``k``, or None when the
    attack does not say at which step it broke some of them.

    Read from ``success_step``, the iteration (of the run, restart or target, that broke the
    sample) at which the engine first saw it misclassified: a sample counts when that
    iteration is among the last ``tail`` of the ``T`` steps.
    """
    broken = attack.attacked[k] & attack.success[k]
    steps = attack.success_step[k][broken]
    if bool((steps < 0).any()):
        return None
    num_steps = attack.loss_trace.shape[1] - 1
    return int((steps > num_steps - tail).sum())


_CONVERGED = CHECKS["attack-not-converged"].thresholds
_TAIL_DIVISOR = round(1 / _CONVERGED["tail_share"])
"""The tail is ``steps // _TAIL_DIVISOR`` steps (at least one): the last ``tail_share``."""
_NO_RISE = 1e-12
"""Stands in for a total rise of zero when the tail's rise is compared with it."""


@check("attack-not-converged")
def not_converged(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    statuses: list[FindingStatus] = []
    for outcome in suite.norms if suite else ():
        for attack in outcome.attacks:
            # loss_trace holds the loss before the first step and after each.
            if (
                not attack_family(attack).gradient
                or attack.loss_trace.shape[1] < _CONVERGED["min_steps"] + 1
            ):
                continue
            for k, epsilon in enumerate(attack.epsilons):
                alive = attack.attacked[k] & ~attack.success[k]
                if int(alive.sum()) == 0:
                    continue
                trace = attack.loss_trace[k][:, alive].double().nanmean(1)
                steps = trace.shape[0] - 1
                tail = max(1, steps // _TAIL_DIVISOR)
                total_rise = float(trace[-1] - trace[0])
                tail_rise = float(trace[-1] - trace[-1 - tail])
                rising = (
                    tail_rise > _CONVERGED["rise_share"] * max(abs(total_rise), _NO_RISE)
                    and tail_rise > _CONVERGED["min_rise"]
                )
                late = _broken_late(attack, k, tail)
                attacked = int(attack.attacked[k].sum())
                # A loss that creeps up on samples no step can break is not worth more steps:
                # where the step of each success is known, the attack must also still have
                # been breaking a material number of samples in its last 10 % of steps.
                still_breaking = late is None or late >= max(
                    _CONVERGED["minimum"], _CONVERGED["material_share"] * attacked
                )
                rows[run_key(attack.label, outcome.norm.value, epsilon)] = {
                    "robust_samples": int(alive.sum()),
                    "total_rise": total_rise,
                    "last_10pct_rise": tail_rise,
                    "broken_in_last_10pct": late,
                    "attacked": attacked,
                }
                statuses.append(
                    FindingStatus.WARN if rising and still_breaking else FindingStatus.PASS
                )
    status = worst_status(statuses)
    return Judged(status, rows)


def _shows_last_iterate(attack: AttackOutcome) -> bool:
    """Whether a run can show a silent success: it went on after a sample's first success.
    That holds without early stopping, and for a targeted run that stops only at its target
    (a sample misclassified on the way may return). A run that stops a sample at its first
    success (untargeted with early stopping, the default and the independent sweep's, or
    targeted toward the top classes) leaves it at the iterate that fooled the model."""
    if attack.result is None:
        return False
    params = attack.result.params
    if params.get("early_stop") is False:
        return True
    return params.get("early_stop") is True and params.get("target_mode") not in (None, "top")


_SILENT = CHECKS["silent-success"].thresholds


@check("silent-success")
def silent_success(evidence: Evidence) -> Judged:
    suite = evidence.suite
    rows: dict[str, Any] = {}
    early: list[str] = []
    statuses: list[FindingStatus] = []
    total = 0
    for outcome in suite.norms if suite else ():
        for attack in (*outcome.attacks, outcome.independent_sweep):
            if attack is None or attack_family(attack) not in (Family.ITERATIVE, Family.TARGETED):
                continue
            where = "independent" if attack is outcome.independent_sweep else "main"
            key = f"{attack.label}/{outcome.norm.value}/{where}"
            if not _shows_last_iterate(attack):
                early.append(key)
                continue
            silent = attack.success & attack.attacked & ~attack.last_success
            count, attacked = int(silent.sum()), int(attack.attacked.sum())
            total += count
            rows[key] = {"silent": count, "attacked": attacked}
            # Material when a last-iterate evaluation would overstate robust accuracy by at
            # least minimum samples and material_share of those attacked (core.checks).
            material = max(_SILENT["minimum"], _SILENT["material_share"] * attacked)
            statuses.append(FindingStatus.WARN if count >= material else FindingStatus.PASS)
    status = worst_status(statuses)
    if not rows:
        explanation = (
            "not observable: every iterative run stopped each sample at its first success, so "
            "its last iterate fooled the model by construction"
        )
    elif status == FindingStatus.WARN:
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
    one line of its message that says what failed (``core.errors.error_line``); the run's
    outcome in the suite keeps the whole message.
    """
    suite = evidence.suite
    if suite is None:
        return Judged(
            FindingStatus.FAIL,
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
            (failed if failure.status == FAILED else not_applicable).append(row)
    evidence_rows = {"failed": failed, "not_applicable": not_applicable}

    def where(row: dict[str, Any]) -> str:
        at = "" if row["epsilon"] is None else f" eps {row['epsilon']:.4g}"
        stage = "" if row["stage"] == "attack" else f" ({row['stage']})"
        return f"{row['attack']}{stage} at {row['norm']}{at}"

    if failed:
        first = failed[0]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        return Judged(
            FindingStatus.FAIL,
            evidence_rows,
            f"{len(failed)} attack run(s) failed, so the samples they would have attacked "
            f"count as robust and the robust accuracy is an upper bound: {where(first)} raised "
            f"{first['message']}{more}",
        )
    if not_applicable:
        names = sorted({where(row) for row in not_applicable})
        return Judged(
            FindingStatus.PASS,
            evidence_rows,
            f"no attack failed; {len(not_applicable)} attack run(s) could not apply "
            f"({not_applicable[0]['message']}): {', '.join(names[:4])}"
            f"{' ...' if len(names) > 4 else ''}, so the reliable robust accuracy is the worst "
            "case over the attacks that ran (vanishing-gradients judges a missing gradient)",
            remedy="",
        )
    return Judged(
        FindingStatus.PASS,
        evidence_rows,
        None,
        remedy="",
    )

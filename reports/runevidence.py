"""The evidence of the checks of the attack runs (``analysis.runchecks``) in sentences and
tables: attacks not converged, silent successes, failed attacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.evidenceblocks import (
    Block,
    Table,
    capped,
    counted,
    evidence_runs,
    format_epsilon,
    format_number,
    joined,
    json_float,
    norm_name,
    renders,
)


def _late(value: Any) -> str:
    return "unknown" if value is None else str(value)


@renders("attack-not-converged")
def _not_converged(evidence: Mapping[str, Any]) -> list[Block]:
    """Per run, how the loss of the still-robust samples moved over the last steps."""
    runs = evidence_runs(evidence)
    rows = [
        (
            run.name(True),
            (
                f"{run.record['robust_samples']} of {run.record['attacked']}",
                format_number(run.record["total_rise"]),
                format_number(run.record["last_10pct_rise"]),
                _late(run.record["broken_in_last_10pct"]),
            ),
        )
        for run in runs
    ]
    concern = [
        (run.record["broken_in_last_10pct"] or 0) * 1e6
        + (json_float(run.record["last_10pct_rise"]) or 0)
        for run in runs
    ]

    def rest(left: list[int]) -> str:
        rises = [json_float(runs[i].record["last_10pct_rise"]) or 0.0 for i in left]
        late = [runs[i].record["broken_in_last_10pct"] or 0 for i in left]
        broken = f"at most {max(late)}" if max(late) else "no"
        return (
            f"{counted(len(left), 'other run')} not shown: loss rise in the last 10 % at most "
            f"{format_number(max(rises))}, {broken} samples broken there."
        )

    kept, summary = capped(rows, concern, rest)
    return [
        "The mean loss of the samples each attack left robust: its rise over all steps and "
        "over the last 10 % of them, and the samples the attack broke in those last steps.",
        Table("", ("left robust", "rise", "last 10 %", "broken late"), tuple(kept)),
        *summary,
    ]


@renders("silent-success")
def _silent(evidence: Mapping[str, Any]) -> list[Block]:
    """Per run, the samples only an intermediate iterate fooled; ``early_stopped`` is written
    since schema 1.7."""
    samples: Mapping[str, Mapping[str, Any]] = evidence["samples"]

    def name_of(key: str) -> str:
        label, norm, where = key.split("/")
        stage = " (independent sweep)" if where == "independent" else ""
        return f"{label} {norm_name(norm)}{stage}"

    named = [(name_of(key), record) for key, record in samples.items()]
    # Schema 1.7 on: runs that stop a sample at its first success cannot show one.
    early = [name_of(key) for key in evidence.get("early_stopped", ())]
    unseen = (
        f" Not observable in {counted(len(early), 'run')} that stopped each sample at its "
        f"first success: {joined(early)}."
        if early
        else ""
    )
    hit = [(name, r) for name, r in named if r["silent"]]
    if not named:
        return [f"No run showed its last iterate after a success.{unseen}"]
    if not hit:
        return [
            f"No intermediate iterate fooled a sample that the last iterate did not, in "
            f"{counted(len(named), 'iterative run')}.{unseen}"
        ]
    head = (
        f"{counted(evidence['total'], 'sample')} in all were fooled by an intermediate iterate "
        f"and not by the last one"
    )
    if len(hit) <= 4:
        listed = "; ".join(f"{name}: {r['silent']} of {r['attacked']} attacked" for name, r in hit)
        others = len(named) - len(hit)
        tail = f"; none in the {counted(others, 'other run')}" if others else ""
        return [f"{head}: {listed}{tail}.{unseen}"]
    rows = [(name, (f"{r['silent']} of {r['attacked']}",)) for name, r in hit]
    kept, summary = capped(
        rows,
        [float(r["silent"]) for _, r in hit],
        lambda left: f"{counted(len(left), 'other run')} with fewer not shown.",
    )
    return [
        f"{head}:",
        Table("run", ("silent",), tuple(kept)),
        *summary,
        *([unseen.strip()] if unseen else []),
    ]


def _stage_run(row: Mapping[str, Any]) -> str:
    """``pgd-ce L∞ ε=0.1``, with the stage when it is not the attack itself (``(sweep)``)."""
    where = f"{row['attack']} {norm_name(row['norm'])}"
    if row["epsilon"] is not None:
        where += f" ε={format_epsilon(row['epsilon'])}"
    return where if row["stage"] == "attack" else f"{where} ({row['stage']})"


@renders("attack-failed")
def _attack_failed(evidence: Mapping[str, Any]) -> list[Block]:
    """The runs that failed and those that could not apply, grouped by their error."""
    failed, inapplicable = list(evidence["failed"]), list(evidence["not_applicable"])
    if not failed and not inapplicable:
        return ["Every attack of the suite ran at every norm and epsilon."]
    groups: dict[tuple[str, str], list[str]] = {}
    for what, rows in (("failed", failed), ("could not run", inapplicable)):
        for row in rows:
            groups.setdefault((what, str(row["message"])), []).append(_stage_run(row))
    rows_shown = [(what, (joined(runs), message)) for (what, message), runs in groups.items()]
    kept, summary = capped(
        rows_shown,
        [1.0 if what == "failed" else 0.0 for what, _ in groups],
        lambda left: f"{counted(len(left), 'other error')} not shown.",
    )
    said = []
    if failed:
        said.append(
            f"{counted(len(failed), 'run')} failed and broke nothing: the samples they would "
            "have attacked count as robust."
        )
    if inapplicable:
        said.append(
            f"{counted(len(inapplicable), 'run')} could not run: the worst case is over the "
            "attacks that ran."
        )
    sentence = " ".join(said)
    return [sentence, Table("", ("runs", "error"), tuple(kept)), *summary]

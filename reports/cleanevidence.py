"""The evidence of the clean-accuracy check (``analysis.cleanchecks``) in sentences and
tables: against the recorded accuracy and under other input conventions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.evidenceblocks import (
    Block,
    Table,
    counted,
    format_number,
    format_p,
    joined,
    json_float,
    renders,
)

_CONVENTIONS_SHOWN = 3
"""Input conventions that scored higher than the audit's own shown in a table (the best)."""


@renders("low-clean-accuracy")
def _clean_accuracy(evidence: Mapping[str, Any]) -> list[Block]:
    """The clean accuracy against chance, the recorded accuracy and the other input
    conventions."""
    blocks: list[Block] = [
        f"Clean accuracy {format_number(evidence['clean_accuracy'])} ({evidence['correct']} of "
        f"{counted(evidence['samples'], 'sample')})."
    ]
    if "chance" in evidence:
        blocks.append(
            f"Chance for {evidence['num_classes']} classes is {format_number(evidence['chance'])}; "
            f"guessing scores this well with p = {format_p(evidence['chance_p_value'])} (exact "
            "binomial test)."
        )
    recorded = evidence.get("recorded_clean_accuracy")
    if recorded is not None:
        shortfall = json_float(evidence["recorded_shortfall"]) or 0.0
        gap = f"{format_number(shortfall)} more than here" if shortfall > 0 else "no more than here"
        blocks.append(
            f"The checkpoint records {format_number(recorded)} from its training, {gap}; "
            f"a model of that accuracy scores this little or less with p = "
            f"{format_p(evidence['recorded_p_value'])} (exact binomial test)."
        )
    tried = evidence.get("conventions") or {}
    if tried:
        own = json_float(evidence["clean_accuracy"]) or 0.0
        ranked = sorted(tried, key=lambda name: -float(tried[name]["accuracy"]))
        better = [name for name in ranked if float(tried[name]["accuracy"]) > own]
        best = ranked[0]
        blocks.append(
            f"The same images presented in {counted(len(tried), 'other input convention')} "
            f"(each against the audit's own by an exact McNemar test at α = "
            f"{format_p(evidence['convention_alpha'])}, 0.01 shared among them): "
            + (
                f"{len(better)} scored higher."
                if better
                else f"none scored higher; the best, {best}, scored "
                f"{format_number(tried[best]['accuracy'])}."
            )
        )
        if better:
            shown = better[:_CONVENTIONS_SHOWN]
            blocks.append(
                Table(
                    "presented as",
                    ("accuracy", "gained", "lost", "p", "flag"),
                    tuple(
                        (
                            name,
                            (
                                format_number(tried[name]["accuracy"]),
                                str(tried[name]["only_this"]),
                                str(tried[name]["only_current"]),
                                format_p(tried[name]["p_value"]),
                                tried[name]["flag"] or "none",
                            ),
                        )
                        for name in shown
                    ),
                )
            )
            if len(better) > len(shown):
                blocks.append(
                    f"{counted(len(better) - len(shown), 'more convention')} scored higher, "
                    f"at most {format_number(tried[better[len(shown)]]['accuracy'])}."
                )
    refused = evidence.get("conventions_not_run") or {}
    if refused:
        blocks.append(f"Not tried, the model raised on its inputs: {joined(list(refused))}.")
    return blocks

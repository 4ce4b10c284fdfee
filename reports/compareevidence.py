"""The evidence of the checks that compare attacks (``analysis.comparechecks``) in sentences
and tables: paired excess breaks, the margin loss against cross-entropy, the unbounded attack
and success against epsilon."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reports.evidenceblocks import (
    Block,
    EvidenceRun,
    Table,
    counted,
    evidence_runs,
    format_epsilon,
    format_p,
    format_percent,
    joined,
    norm_name,
    renders,
    split_table,
)

_PAIRED_DOER = {
    "one-step-beats-iterative": "the one-step attack",
    "black-box-beats-white-box": "the black-box attack",
    "random-search-beats-gradient": "random search",
    "targeted-beats-untargeted": "the targeted attack",
}


Metric = tuple[str, Callable[[Mapping[str, Any]], str]]


def _series(
    runs: list[EvidenceRun], metrics: Sequence[Metric], wide: Sequence[Metric] | None = None
) -> list[Block]:
    """Runs as tables: one row per run (``metrics`` as columns) when each attack and norm has
    at most two epsilons; else one table per attack and norm with the epsilons as columns and
    ``wide`` (default ``metrics``) as rows."""
    with_label = len({r.label for r in runs}) > 1
    groups: dict[tuple[str, str], list[EvidenceRun]] = {}
    for run in runs:
        groups.setdefault((run.label, run.norm), []).append(run)
    if max(len(group) for group in groups.values()) <= 2:
        rows = [(r.name(with_label), tuple(cell(r.record) for _, cell in metrics)) for r in runs]
        return [Table("", tuple(name for name, _ in metrics), tuple(rows))]
    blocks: list[Block] = []
    for (label, norm), group in groups.items():
        table = Table(
            f"{label} {norm_name(norm)} ε" if with_label else f"{norm_name(norm)} ε",
            tuple(f"{r.epsilon:g}" for r in group),
            tuple((name, tuple(cell(r.record) for r in group)) for name, cell in (wide or metrics)),
            by_column=True,
        )
        blocks += split_table(table)
    return blocks


def _broke(record: Mapping[str, Any]) -> str:
    return f"{record['broken']} of {record['attempted']}"


@renders(*_PAIRED_DOER)
def _paired(evidence: Mapping[str, Any]) -> list[Block]:
    """The pairwise checks: per run, what the later attack broke of what the earlier ones
    left."""
    runs = evidence_runs(evidence)
    first = runs[0].record
    labels = joined(sorted({r.label for r in runs}))
    afters = {tuple(r.record["after"]) for r in runs}
    after = joined(list(runs[0].record["after"])) if len(afters) == 1 else "the attacks before it"
    tolerated = {r.record["tolerated_rate"] for r in runs}
    material = {r.record["material_share"] for r in runs}
    limits = (
        f"Tolerated: {format_percent(first['tolerated_rate'])} of those samples; material: "
        f"{format_percent(first['material_share'])} of all samples; "
        if len(tolerated) == len(material) == 1
        else ""
    )
    sentence = (
        f"What {labels} broke of the samples that {after} left robust. {limits}"
        "p: exact binomial test against the tolerated rate."
    )
    metrics: list[Metric] = [
        ("broke", _broke),
        ("rate", lambda r: format_percent(r["rate"])),
        ("of all", lambda r: format_percent(r["share_of_samples"])),
        ("p", lambda r: format_p(r["p_value"])),
    ]
    if all(r.record["broken"] == 0 for r in runs) and len(runs) > 2:
        attempted = sorted(int(r.record["attempted"]) for r in runs)
        return [
            f"{labels} broke none of the samples that {after} left robust, under any of the "
            f"{len(runs)} norms and epsilons ({attempted[0]} to {attempted[-1]} samples left "
            "to it)."
        ]
    # With epsilons as columns, only what it broke of what was left to it, and p.
    wide: list[Metric] = [
        ("broke", lambda r: f"{r['broken']}/{r['attempted']}"),
        ("p", lambda r: format_p(r["p_value"])),
    ]
    return [sentence, *_series(runs, metrics, wide)]


@renders("margin-loss-beats-cross-entropy")
def _margin(evidence: Mapping[str, Any]) -> list[Block]:
    """Per run, the samples only the margin loss and only its cross-entropy peer broke."""
    runs = evidence_runs(evidence)
    pairs = sorted({f"{r.label} against {r.record['peer']}" for r in runs})
    sentence = (
        f"Samples only the margin loss broke, and only the cross-entropy (CE), with the same "
        f"budget on every clean-correct sample ({joined(pairs)}); the excess as a share of "
        f"all samples (material from {format_percent(runs[0].record['material_share'])}); p: exact "
        "McNemar test."
    )
    metrics: list[Metric] = [
        ("only margin", lambda r: str(r["only_margin_loss"])),
        ("only CE", lambda r: str(r["only_cross_entropy"])),
        ("excess", lambda r: format_percent(r["share_of_samples"])),
        ("p", lambda r: format_p(r["p_value"])),
    ]
    wide: list[Metric] = [
        ("margin/CE", lambda r: f"{r['only_margin_loss']}/{r['only_cross_entropy']}"),
        ("p", lambda r: format_p(r["p_value"])),
    ]
    return [sentence, *_series(runs, metrics, wide)]


@renders("unbounded-attack-below-100")
def _unbounded(evidence: Mapping[str, Any]) -> list[Block]:
    """Per norm, the samples that survived the unbounded radius."""
    sentences = []
    for norm, row in evidence.items():
        sentences.append(
            f"{norm_name(norm)} at ε = {format_epsilon(row['epsilon'])}: "
            f"{row['survived']} of {counted(row['samples'], 'sample')} survived "
            f"({format_percent(row['success_rate'])} success)."
        )
    return [" ".join(sentences)]


@renders("success-not-increasing-with-epsilon")
def _monotonic(evidence: Mapping[str, Any]) -> list[Block]:
    """Per norm, the independent sweep's success rate by radius and where it dropped."""
    samples = sorted({row["samples"] for row in evidence.values()})
    blocks: list[Block] = [
        f"Attack success in the independent runs (a fresh attack per ε on "
        f"{' and '.join(map(str, samples))} samples); lost/gained: samples broken at the "
        "previous ε and not at this one, and the reverse; p: exact McNemar test of the drop."
    ]
    plateaus = []
    for norm, row in evidence.items():
        epsilons = list(row["epsilons"])
        steps = {float(s["to"]): s for s in row["steps"]}
        cells: dict[str, list[str]] = {"success": [], "lost/gained": [], "p": []}
        for epsilon, rate in zip(epsilons, row["success_rate"], strict=True):
            step = steps.get(float(epsilon))
            cells["success"].append(format_percent(rate))
            cells["lost/gained"].append("–" if step is None else f"{step['lost']}/{step['gained']}")
            cells["p"].append("–" if step is None else format_p(step["p_value"]))
        table = Table(
            f"{norm_name(norm)} ε",
            tuple(format_epsilon(e) for e in epsilons),
            tuple((name, tuple(values)) for name, values in cells.items()),
            by_column=True,
        )
        blocks += split_table(table)
        if row["plateau_below_90"]:
            plateaus.append(norm_name(norm))
    if plateaus:
        blocks.append(
            f"Under {joined(plateaus)} success stalls below 90 % at the largest bounded ε."
        )
    return blocks

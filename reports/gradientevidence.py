"""The evidence of the gradient checks (``analysis.gradientchecks``) in sentences and tables:
vanishing input gradients, non-finite values, and gradients against finite differences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.evidenceblocks import (
    Block,
    Table,
    capped,
    counted,
    format_epsilon,
    format_number,
    format_p,
    format_percent,
    norm_name,
    renders,
    split_table,
)


@renders("vanishing-gradients")
def _vanishing(evidence: Mapping[str, Any]) -> list[Block]:
    """The clean gradients and the attacks' first gradients, two populations, each described
    on its own (the clean shares are written since schema 1.7). With ``error`` (the model raised
    when its input required grad), nothing was measured."""
    if evidence.get("error"):
        return [
            f"The input gradient was not measured: the model raised {evidence['error']} when its "
            "input requires grad."
        ]
    if not evidence["input_gradient_exists"]:
        return [f"The input gradient does not exist: {evidence['reason']}."]
    threshold = format_number(evidence["threshold"])
    clean = f"{format_percent(evidence['clean_zero_fraction'])} of the clean input gradients"
    if evidence.get("clean_measured") is not None:
        clean += f" ({counted(evidence['clean_measured'], 'sample')})"
    clean += " are exactly zero"
    if evidence.get("clean_vanishing_fraction") is not None:
        clean += f" and {format_percent(evidence['clean_vanishing_fraction'])} below {threshold}"
    return [
        f"{clean[0].upper()}{clean[1:]}.",
        f"Of the attacks' first input gradients ({counted(evidence['measured'], 'gradient')} "
        f"measured), {format_percent(evidence['attack_zero_fraction'])} are exactly zero and "
        f"{format_percent(evidence['vanishing_fraction'])} below {threshold}.",
    ]


def _hits(record: Mapping[str, Any]) -> str:
    epsilons, samples = list(record["epsilons"]), [int(s) for s in record["samples"]]
    hit = [(e, s) for e, s in zip(epsilons, samples, strict=True) if s]
    if not hit:
        return "0"
    if len(epsilons) == 1:
        return str(samples[0])
    if len(hit) <= 2:
        return ", ".join(f"{s} at ε={format_epsilon(e)}" for e, s in hit)
    return f"up to {max(samples)}, at {len(hit)} of {len(epsilons)} ε"


_NONFINITE_COUNTS = (
    "clean_logits",
    "clean_gradients",
    "clean_samples",
    "attack_samples",
    "attack_logits",
    "attack_gradients",
)


@renders("non-finite-values")
def _nonfinite(evidence: Mapping[str, Any]) -> list[Block]:
    """The non-finite logits and gradients, clean and per run."""
    counts = [evidence[key] for key in _NONFINITE_COUNTS]
    attacks: Mapping[str, Mapping[str, Any]] = evidence["attacks"]
    if not any(counts) and not attacks:
        return ["No NaN or Inf anywhere: every clean and attacked logit and gradient was finite."]
    blocks: list[Block] = [
        f"Clean: {counted(evidence['clean_logits'], 'sample')} with NaN or Inf logits in the "
        f"probes' pass and {evidence['clean_samples']} in the suite's, "
        f"{evidence['clean_gradients']} with non-finite input gradients. Under attack: "
        f"{counted(evidence['attack_samples'], 'sample')} whose "
        f"example had non-finite logits, {evidence['attack_logits']} non-finite sample "
        f"evaluations, {evidence['attack_gradients']} non-finite input gradients."
    ]
    if attacks:
        rows = []
        for key, record in attacks.items():
            label, _, rest = key.partition("/")
            norm, _, stage = rest.partition(" ")
            rows.append(
                (
                    f"{label} {norm_name(norm)}{' ' + stage if stage else ''}",
                    (_hits(record), str(record["evaluations"])),
                )
            )
        concern = [float(sum(r["samples"]) + r["evaluations"]) for r in attacks.values()]
        kept, summary = capped(
            rows, concern, lambda left: f"{counted(len(left), 'other attack')} not shown."
        )
        blocks.append(Table("attack", ("samples", "evaluations"), tuple(kept)))
        blocks += summary
    return blocks


@renders("gradient-disagrees-with-finite-differences")
def _finite_differences(evidence: Mapping[str, Any]) -> list[Block]:
    """The pairs that disagree with finite differences, or why none was measured."""
    if set(evidence) == {"reason"}:
        return [f"Not measured: {evidence['reason']}."]
    blocks: list[Block] = [
        f"{evidence['disagreeing']} of {counted(evidence['pairs'], 'sample-direction pair')} "
        f"({format_percent(evidence['disagreement_fraction'])}) disagree by more than "
        f"{format_percent(evidence['tolerance'])} with the finite differences at every step, in "
        f"{evidence['precision']}; tolerated {format_percent(evidence['tolerated_rate'])}, "
        f"material from {format_percent(evidence['material_rate'])} (exact binomial test, p = "
        f"{format_p(evidence['p_value'])})."
    ]
    extra = []
    if evidence["nonfinite_pairs"]:
        extra.append(f"{counted(evidence['nonfinite_pairs'], 'pair')} had non-finite values.")
    if evidence["median_ratio"] is not None:
        extra.append(
            f"The finite difference is {format_number(evidence['median_ratio'])} times the "
            "gradient's directional derivative (median)."
        )
    table = Table(
        "step",
        tuple(format_epsilon(h) for h in evidence["steps"]),
        (("disagree", tuple(format_percent(v) for v in evidence["step_disagreement"])),),
        by_column=True,
    )
    return [*blocks, *split_table(table), *extra]

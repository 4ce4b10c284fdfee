"""The evidence of the model-behaviour checks (``analysis.modelchecks``) in sentences and
tables: random outputs, outputs that depend on the batch, train mode, probability outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.evidenceblocks import (
    Block,
    counted,
    format_number,
    format_p,
    format_percent,
    joined,
    renders,
)


@renders("stochastic-model")
def _stochastic(evidence: Mapping[str, Any]) -> list[Block]:
    """How much repeated passes differ, and whether a prediction flips."""
    eot = evidence["eot_samples"]
    return [
        f"{evidence['num_repeats']} forward passes of "
        f"{counted(evidence['repeat_samples'], 'sample')}: largest logit change "
        f"{format_number(evidence['max_repeat_difference'])}, "
        f"{counted(evidence['prediction_flips'], 'prediction')} flipped "
        f"({format_percent(evidence['prediction_flip_fraction'])}). Gradients averaged over "
        + (f"{eot} passes (EOT)." if eot != 1 else "1 pass (no EOT).")
    ]


@renders("batch-dependent-outputs")
def _batch(evidence: Mapping[str, Any]) -> list[Block]:
    """How much a sample's logits change apart from its batch."""
    apart = "alone" if evidence["composition"] == "single" else "in pairs"
    blocks: list[Block] = [
        f"{counted(evidence['samples'], 'sample')} evaluated in a batch of "
        f"{evidence['batch_size']} and {apart}: {evidence['differing']} changed by more than "
        f"{format_number(evidence['tolerance'])} of the row's largest logit (largest change "
        f"{format_number(evidence['max_relative_difference'])}), "
        f"{counted(evidence['prediction_flips'], 'prediction')} flipped."
    ]
    if "grouped" in evidence:
        blocks.append(
            f"Repeated passes: {evidence['grouped']} of {evidence['compared']} samples' passes "
            f"pair up by composition (chance: {format_percent(evidence['chance'])}; exact binomial "
            f"test, p = {format_p(evidence['p_value'])})."
        )
    return blocks


@renders("model-in-train-mode")
def _train_mode(evidence: Mapping[str, Any]) -> list[Block]:
    """The modules left in training mode."""
    modules = list(evidence["modules"])
    if not modules:
        return ["No module is in training mode after eval()."]
    return [f"In training mode after eval(): {joined(modules)}."]


@renders("probability-outputs")
def _probabilities(evidence: Mapping[str, Any]) -> list[Block]:
    """Whether the outputs are probabilities."""
    if evidence["probability_outputs"]:
        return ["The outputs are probabilities: rows in [0, 1] that sum to 1."]
    return ["The outputs are logits, not rows of probabilities."]

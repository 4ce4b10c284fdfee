"""The checks of how the model behaves, from direct probes: random outputs, outputs that depend
on the batch, a model left in train mode, and probabilities in place of logits."""

from __future__ import annotations

from typing import Any

from analysis.findings import Evidence, Judged, check
from core.checks import ALPHA, CHECKS, word
from core.document import FindingStatus
from core.stats import binomial_tail


@check("stochastic-model")
def stochastic_model(evidence: Evidence) -> Judged:
    """Repeated forward passes on the same inputs differ. When they change a decision on a
    clean input the classifier itself is random: a deterministic function never flips, so one
    flip proves it, without a threshold. Every accuracy the audit reports, clean and robust, is
    then a single draw of a random variable, judged by one pass, whatever EOT did for the
    gradients (reliability). Logits that differ without changing any decision only warn."""
    probes = evidence.probes
    rows = {
        "max_repeat_difference": probes.max_repeat_difference,
        "repeat_samples": probes.repeat_samples,
        "num_repeats": probes.num_repeats,
        "prediction_flips": probes.prediction_flips,
        "prediction_flip_fraction": probes.prediction_flip_fraction,
        "eot_samples": evidence.eot_samples,
    }
    if not probes.stochastic:
        return Judged(
            FindingStatus.PASS,
            rows,
            f"{probes.num_repeats} forward passes of {probes.repeat_samples} samples give "
            "identical logits",
            remedy="",
        )
    seen = (
        f"{probes.num_repeats} forward passes of {probes.repeat_samples} clean samples differ "
        f"(largest logit change {probes.max_repeat_difference:.3g})"
    )
    eot = f"gradients were averaged over {evidence.eot_samples} passes (EOT)"
    if probes.prediction_flips:
        return Judged(
            FindingStatus.FAIL,
            rows,
            f"{seen} and change the prediction of {probes.prediction_flips} "
            f"({probes.prediction_flip_fraction:.1%}): the classifier is random, so every "
            f"accuracy here is one draw judged by one pass; {eot}",
            remedy="Make the model deterministic at test time (eval() on every layer, no random "
            "transform in forward), or evaluate it as a randomised defence: robust accuracy as "
            "an expectation over many passes, with EOT attacks (AutoAttack's version='rand')",
        )
    return Judged(
        FindingStatus.WARN,
        rows,
        f"{seen} without changing a prediction; {eot}",
    )


_BATCH_CHANCE = CHECKS["batch-dependent-outputs"].thresholds["chance"]


@check("batch-dependent-outputs")
def batch_dependent_outputs(evidence: Evidence) -> Judged:
    """A sample's logits change with the other samples in its batch (batch norm in train mode,
    a max over the batch): the attacks batch samples, so they attack another function than the
    one evaluated. A deterministic model fails when any sample changes beyond the probe's
    relative tolerance; a stochastic one when two batched passes and two passes apart pair up
    by composition significantly more often than the 1/3 of exchangeable passes (exact
    binomial test)."""
    probes = evidence.probes
    rows: dict[str, Any] = {
        "composition": probes.batch_composition,
        "batch_size": probes.batch_size,
        "samples": probes.batch_compared,
        "max_relative_difference": probes.batch_max_relative_difference,
        "tolerance": probes.batch_tolerance,
        "differing": probes.batch_differing,
        "prediction_flips": probes.batch_prediction_flips,
    }
    if probes.batch_compared == 0:
        return Judged(
            FindingStatus.NOT_APPLICABLE,
            rows,
            "not measured: the model raised on every sample alone and in pairs"
            if probes.batch_composition == "refused"
            else "no sample had finite logits in both compositions",
            remedy="",
        )
    if probes.stochastic:
        compared, grouped = probes.batch_grouped_compared, probes.batch_grouped
        assert compared is not None and grouped is not None  # probe_model measures them
        p_value = binomial_tail(grouped, compared, _BATCH_CHANCE) if compared else 1.0
        rows.update(grouped=grouped, compared=compared, chance=_BATCH_CHANCE, p_value=p_value)
        dependent = p_value < ALPHA
        seen = (
            f"{grouped} of {compared} samples' passes pair up by batch composition (two "
            f"batched, two alone; chance: {word(_BATCH_CHANCE, 'fraction')} of samples; "
            f"p = {p_value:.2g})"
        )
    else:
        dependent = probes.batch_differing > 0
        seen = (
            f"{probes.batch_differing} of {probes.batch_compared} samples changed their logits "
            f"by more than {probes.batch_tolerance:g} (relative) when evaluated "
            f"{'alone' if probes.batch_composition == 'single' else 'in a pair'} instead of in "
            f"the batch (largest change {probes.batch_max_relative_difference:.3g}; "
            f"{probes.batch_prediction_flips} prediction(s) flipped)"
        )
    return Judged(
        FindingStatus.FAIL if dependent else FindingStatus.PASS,
        rows,
        seen if dependent else None,
    )


@check("model-in-train-mode")
def train_mode(evidence: Evidence) -> Judged:
    modules = evidence.probes.train_mode_modules
    return Judged(
        FindingStatus.FAIL if modules else FindingStatus.PASS,
        {"modules": list(modules)},
        f"{len(modules)} module(s) stay in training mode after eval(): {', '.join(modules[:5])}"
        if modules
        else None,
    )


@check("probability-outputs")
def probability_outputs(evidence: Evidence) -> Judged:
    probability = evidence.probes.probability_outputs
    return Judged(
        FindingStatus.FAIL if probability else FindingStatus.PASS,
        {"probability_outputs": probability},
    )

"""What each red-flag check measures, for the report's glossary of checks.

The text follows ``analysis/redflags.py`` and the README's table of checks; it lives here
because ``analysis.redflags`` imports torch and ``reports`` must not. A test keeps the two in
step: every registered check has an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHECK_HELP", "CheckHelp"]


@dataclass(frozen=True)
class CheckHelp:
    """One check: its name, what it compares (the statistic) and when it fails (threshold)."""

    title: str
    statistic: str
    threshold: str


_PAIRED = (
    "An exact one-sided binomial test (α = 0.01) of the samples it broke against a tolerated "
    "rate; every attack runs only on what the attacks before it left robust, so these are "
    "discordant samples."
)

CHECK_HELP: dict[str, CheckHelp] = {
    "low-clean-accuracy": CheckHelp(
        "Clean accuracy near chance or below expectation",
        "The clean accuracy against chance (1 / classes; exact binomial test), against the "
        "accuracy the checkpoint records from its training (exact binomial test), and against "
        "the same images presented in other input conventions: no normalisation, the named "
        "ones, a grid of means 0, 0.25, 0.5 and stds 0.125, 0.25, 0.5, pixels in 0..255, BGR "
        "channel order (exact McNemar test, Bonferroni-corrected over the conventions).",
        "Fails when it is not significantly above chance (α = 0.01), or significantly and "
        "materially below the recorded accuracy (5 points and at least 5 samples) or another "
        "convention's (1 % of the samples and at least 5); warns when only significantly. A "
        "reliability check: a model fed its inputs in the wrong convention makes every robust "
        "accuracy meaningless.",
    ),
    "one-step-beats-iterative": CheckHelp(
        "One-step attack beats iterative",
        "Samples FGSM broke that the iterative attacks (PGD) left robust. " + _PAIRED,
        "Fails above 1 % of the samples left to it (at least 3, and 1 % of all samples).",
    ),
    "black-box-beats-white-box": CheckHelp(
        "Black-box beats white-box",
        "Samples Square broke that every gradient attack left robust. " + _PAIRED,
        "Fails above 5 % of the samples left to it (at least 5, and 2 % of all samples).",
    ),
    "random-search-beats-gradient": CheckHelp(
        "Random search beats gradients",
        "Samples random noise in the ε-ball broke that the gradient attacks left robust. "
        + _PAIRED,
        "Fails above 1 % of the samples left to it (at least 3, and 1 % of all samples).",
    ),
    "targeted-beats-untargeted": CheckHelp(
        "Targeted beats untargeted",
        "Samples PGD-T broke that PGD-CE left robust (the NormOut thesis' pattern). " + _PAIRED,
        "Fails above 10 % of the samples left to it (at least 5, and 5 % of all samples).",
    ),
    "margin-loss-beats-cross-entropy": CheckHelp(
        "Margin loss beats cross-entropy",
        "PGD on the margin (CW) loss runs on every sample beside PGD-CE with the same budget; "
        "the samples only one of them broke are compared by an exact McNemar test. A saturated "
        "softmax starves the cross-entropy gradient, not the margin's (AutoAttack's reason for "
        "its DLR loss).",
        "Fails when the margin loss breaks significantly (α = 0.01) and materially (at least 5 "
        "samples and 2 % of all) more.",
    ),
    "unbounded-attack-below-100": CheckHelp(
        "Unbounded attack below 100 %",
        "Samples that survive the sweep's attack at an ε covering the whole input box.",
        "Fails when more than 1 % survive; any survivor warns.",
    ),
    "success-not-increasing-with-epsilon": CheckHelp(
        "Success not increasing with epsilon",
        "In the independent per-ε runs (on a subsample), samples broken at one ε and not at the "
        "next, against the reverse (exact McNemar test).",
        "Fails on a significant drop (at least 3 samples, α = 0.01); a plateau below 90 % "
        "success warns.",
    ),
    "vanishing-gradients": CheckHelp(
        "Zero or vanishing gradients",
        "The share of first input gradients (clean and in the attacks) that are exactly zero, "
        "and whether the input gradient exists at all (a cut autograd graph: detach, a "
        "comparison, an integer cast, a NumPy round trip).",
        "Fails above 5 % exact zeros or without an input gradient; warns above 1 %, or when "
        "more than 25 % are below the vanishing threshold.",
    ),
    "non-finite-values": CheckHelp(
        "NaN or Inf in logits or gradients",
        "Samples with non-finite clean logits, samples whose attack example had non-finite "
        "logits, and per attack, norm and ε how many; such a row has no prediction and never "
        "counts as a success.",
        "Fails on any NaN or Inf (a reliability check).",
    ),
    "gradient-disagrees-with-finite-differences": CheckHelp(
        "Gradients disagree with finite differences",
        "On 256 samples, one random direction each: the directional derivative of a fixed "
        "class margin against central, forward and backward differences at three step sizes "
        "(float64 where the model runs in it). Not applicable to stochastic models or without "
        "an input gradient.",
        "Fails when more than 10 % disagreement at every step occurs on significantly more "
        "than 1 % of pairs (exact binomial test, α = 0.01) and on at least 5 % (at least 5 "
        "pairs).",
    ),
    "stochastic-model": CheckHelp(
        "Stochastic model",
        "Four forward passes of the first batch: the largest logit change and the predictions "
        "that flip.",
        "Fails when a clean prediction flips (the classifier is random); warns when only the "
        "logits move. Gradients are then averaged over 8 passes (EOT). A reliability check.",
    ),
    "batch-dependent-outputs": CheckHelp(
        "Outputs depend on the batch",
        "64 samples evaluated in the audit's batch and alone (or in a pair): the largest "
        "change relative to the row's largest logit; for a stochastic model, how often passes "
        "pair up by batch composition.",
        "Fails above 10⁻³ relative change (deterministic), or pairing significantly above the "
        "1/3 of exchangeable passes (stochastic). A reliability check.",
    ),
    "model-in-train-mode": CheckHelp(
        "Model left in train mode",
        "Submodules still in training mode after eval().",
        "Fails on any such module. A reliability check.",
    ),
    "probability-outputs": CheckHelp(
        "Probabilities instead of logits",
        "Whether the outputs are rows in [0, 1] summing to 1.",
        "Fails when they are. A reliability check.",
    ),
    "attack-not-converged": CheckHelp(
        "Attack not converged",
        "The mean loss of the still-robust samples over the last 10 % of PGD steps, and the "
        "samples broken in those steps (from each sample's success step).",
        "Warns when the loss still rises and the attack broke at least 5 samples (and 2 % of "
        "those attacked) in those steps.",
    ),
    "silent-success": CheckHelp(
        "Silent success",
        "Samples an intermediate iterate fooled but the last one did not (counted as broken "
        "here; a last-iterate evaluation would miss them), in the runs that went on after a "
        "sample's first success: without early stopping, or targeted and stopping only at the "
        "target. A run that stops a sample at its first success (the default, and the "
        "independent sweep's) cannot show one.",
        "Warns at 5 samples and 2 % of those attacked; not applicable when every iterative run "
        "stopped early (set early_stop = false on the swept attack to observe it).",
    ),
    "attack-failed": CheckHelp(
        "No attack failed",
        "Attack and sweep runs that raised (out of memory, a library error, a model raising "
        "on some inputs) or could not apply, per norm and epsilon, with their errors. A failed "
        "run broke nothing, so the samples it would have attacked count as robust.",
        "Fails on any failed run: the verdict is then 'evaluation incomplete' and every robust "
        "accuracy at that norm and epsilon an upper bound. An attack that cannot apply (no input "
        "gradient) is listed, not flagged: vanishing-gradients judges that.",
    ),
}
"""Every check of ``analysis.redflags.CHECKS``, by code."""

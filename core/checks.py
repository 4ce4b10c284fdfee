"""Every red-flag check declared once, as data: its code, title, what it measures, when it
fails, the sentence it says when it passes or flags, its remedy, and whether its failure
suggests gradient masking or makes the evaluation unreliable.

``analysis.redflags`` computes each check (torch) from these declarations, and the report's
glossary of checks reads them here, without torch. A test keeps the two in step: every
registered check is declared, and every declared check is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHECKS", "CheckSpec"]


@dataclass(frozen=True)
class CheckSpec:
    """One check.

    Attributes:
        title: its short human name.
        statistic: what it compares, for the glossary.
        threshold: when it fails or warns, for the glossary.
        remedy: what to do when it flags (a check may say more in a given case).
        flagged: what it says when it warns or fails, unless the check words the case itself.
        passed: what it says when it passes (or does not apply), unless worded by the check.
        masking: True when its failure suggests gradient masking, False when it makes the
            evaluation itself unreliable (a reliability check).
    """

    title: str
    statistic: str
    threshold: str
    remedy: str = ""
    flagged: str = ""
    passed: str = ""
    masking: bool = True


_PAIRED = (
    "An exact one-sided binomial test (α = 0.01) of the samples it broke against a tolerated "
    "rate; every attack runs only on what the attacks before it left robust, so these are "
    "discordant samples."
)

CHECKS: dict[str, CheckSpec] = {
    "low-clean-accuracy": CheckSpec(
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
        remedy="Audit the model in the input convention it was trained with: give --normalization "
        "(imagenet, cifar10, cifar10-torchvision, mnist, or MEAN,..:STD,..) and --bounds as the "
        "training code had them, and check the channel order and the dataset; until then every "
        "robust accuracy here is that of a model fed the wrong inputs",
        masking=False,
    ),
    "one-step-beats-iterative": CheckSpec(
        "One-step attack beats iterative",
        "Samples FGSM broke that the iterative attacks (PGD) left robust. " + _PAIRED,
        "Fails above 1 % of the samples left to it (at least 3, and 1 % of all samples).",
        remedy="An iterative attack should dominate its single step: check the step size and "
        "the number of steps, and look for gradient masking (Athalye et al. 2018, 3.1)",
        flagged="FGSM broke samples that the iterative attacks left robust",
        passed="FGSM found nothing that the iterative attacks missed",
    ),
    "black-box-beats-white-box": CheckSpec(
        "Black-box beats white-box",
        "Samples Square broke that every gradient attack left robust. " + _PAIRED,
        "Fails above 5 % of the samples left to it (at least 5, and 2 % of all samples).",
        remedy="Gradients are uninformative: report the worst case over all attacks (reliable "
        "robust accuracy) and suspect gradient masking; try BPDA/EOT or a margin loss",
        flagged="Square broke samples that every gradient attack left robust",
        passed="Square found little that the gradient attacks missed",
    ),
    "random-search-beats-gradient": CheckSpec(
        "Random search beats gradients",
        "Samples random noise in the ε-ball broke that the gradient attacks left robust. "
        + _PAIRED,
        "Fails above 1 % of the samples left to it (at least 3, and 1 % of all samples).",
        remedy="Random sampling should never beat a gradient attack: gradients are masked or "
        "broken",
        flagged="random noise in the epsilon ball broke samples that the gradient attacks left "
        "robust",
        passed="random noise found nothing that the gradient attacks missed",
    ),
    "targeted-beats-untargeted": CheckSpec(
        "Targeted beats untargeted",
        "Samples PGD-T broke that PGD-CE left robust (the NormOut thesis' pattern). " + _PAIRED,
        "Fails above 10 % of the samples left to it (at least 5, and 5 % of all samples).",
        remedy="The untargeted cross-entropy attack is failing (its gradient vanishes or points "
        "the wrong way); use a margin loss or multi-target attacks and report the worst case",
        flagged="the targeted attack broke many samples the untargeted one left robust",
        passed="the targeted attack found little beyond the untargeted one",
    ),
    "margin-loss-beats-cross-entropy": CheckSpec(
        "Margin loss beats cross-entropy",
        "PGD on the margin (CW) loss runs on every sample beside PGD-CE with the same budget; "
        "the samples only one of them broke are compared by an exact McNemar test. A saturated "
        "softmax starves the cross-entropy gradient, not the margin's (AutoAttack's reason for "
        "its DLR loss).",
        "Fails when the margin loss breaks significantly (α = 0.01) and materially (at least 5 "
        "samples and 2 % of all) more.",
        remedy="The cross-entropy gradient is starved (a saturated softmax, as with inflated "
        "logits): report margin-loss (CW/DLR) attacks and the worst case over all attacks",
        flagged="PGD on the margin loss broke more samples than PGD-CE with the same budget",
        passed="PGD on the margin loss found no more than PGD-CE",
    ),
    "unbounded-attack-below-100": CheckSpec(
        "Unbounded attack below 100 %",
        "Samples that survive the sweep's attack at an ε covering the whole input box.",
        "Fails when more than 1 % survive; any survivor warns.",
        remedy="With an unbounded budget every sample must fall; if not, the attack is failing "
        "(masked gradients, too few steps) and bounded results are not trustworthy",
        flagged="an attack allowed to change the whole image did not reach 100 % success",
        passed="the unbounded attack reached (nearly) 100 % success",
    ),
    "success-not-increasing-with-epsilon": CheckSpec(
        "Success not increasing with epsilon",
        "In the independent per-ε runs (on a subsample), samples broken at one ε and not at the "
        "next, against the reverse (exact McNemar test).",
        "Fails on a significant drop (at least 3 samples, α = 0.01); a plateau below 90 % "
        "success warns.",
        remedy="A larger budget can only help a working attack: non-monotonic success or an "
        "early plateau means the optimisation is failing",
        flagged="attack success fell, or stalled well below 100 %, as epsilon grew",
        passed="attack success grows with epsilon",
    ),
    "vanishing-gradients": CheckSpec(
        "Zero or vanishing gradients",
        "The share of first input gradients (clean and in the attacks) that are exactly zero, "
        "and whether the input gradient exists at all (a cut autograd graph: detach, a "
        "comparison, an integer cast, a NumPy round trip).",
        "Fails above 5 % exact zeros or without an input gradient; warns above 1 %, or when "
        "more than 25 % are below the vanishing threshold. Not measured (n/a, naming the error) "
        "when the model raises on an input that requires grad.",
        remedy="Vanishing gradients starve gradient attacks (saturated softmax, quantisation): "
        "use a margin loss on logits, BPDA, or gradient-free attacks",
    ),
    "non-finite-values": CheckSpec(
        "NaN or Inf in logits or gradients",
        "Samples with non-finite clean logits, samples whose attack example had non-finite "
        "logits, and per attack, norm and ε how many; such a row has no prediction and never "
        "counts as a success.",
        "Fails on any NaN or Inf (a reliability check).",
        remedy="Non-finite values break attacks silently: find the operation that overflows "
        "(log of zero, division by zero) and fix it before evaluating",
        passed="all logits and gradients are finite",
        masking=False,
    ),
    "gradient-disagrees-with-finite-differences": CheckSpec(
        "Gradients disagree with finite differences",
        "On 256 samples, one random direction each: the directional derivative of a fixed "
        "class margin against central, forward and backward differences at three step sizes "
        "(float64 where the model runs in it). Not applicable to stochastic models, without an "
        "input gradient, or when the model raises on the inputs the differences take.",
        "Fails when more than 10 % disagreement at every step occurs on significantly more "
        "than 1 % of pairs (exact binomial test, α = 0.01) and on at least 5 % (at least 5 "
        "pairs).",
        remedy="The backward pass does not describe the function (shattered gradients, a "
        "non-differentiable or custom-gradient layer): use BPDA or gradient-free attacks",
    ),
    "stochastic-model": CheckSpec(
        "Stochastic model",
        "Four forward passes of the first batch: the largest logit change and the predictions "
        "that flip.",
        "Fails when a clean prediction flips (the classifier is random); warns when only the "
        "logits move. Gradients are then averaged over 8 passes (EOT). A reliability check.",
        remedy="Randomised models mask gradients: keep EOT on and read robust accuracy as an "
        "expectation over the randomness",
        masking=False,
    ),
    "batch-dependent-outputs": CheckSpec(
        "Outputs depend on the batch",
        "64 samples evaluated in the audit's batch and alone (or in a pair): the largest "
        "change relative to the row's largest logit; for a stochastic model, how often passes "
        "pair up by batch composition.",
        "Fails above 10⁻³ relative change (deterministic), or pairing significantly above the "
        "1/3 of exchangeable passes (stochastic). A reliability check.",
        remedy="Outputs that depend on the other samples (batch norm in train mode, a max over "
        "the batch) are attacked through another function than they are evaluated with: "
        "evaluate in eval mode with per-sample normalisation, or attack and evaluate one "
        "sample at a time",
        passed="each sample's logits are the same alone and in its batch",
        masking=False,
    ),
    "model-in-train-mode": CheckSpec(
        "Model left in train mode",
        "Submodules still in training mode after eval().",
        "Fails on any such module. A reliability check.",
        remedy="Dropout or batch norm in training mode at test time makes predictions random; "
        "call eval() on every submodule (or evaluate stochastically on purpose, with EOT)",
        passed="every module is in eval mode",
        masking=False,
    ),
    "probability-outputs": CheckSpec(
        "Probabilities instead of logits",
        "Whether the outputs are rows in [0, 1] summing to 1.",
        "Fails when they are. A reliability check.",
        remedy="Cross-entropy on probabilities applies softmax twice and flattens gradients: "
        "remove the final softmax so the model returns logits",
        flagged="the model outputs probabilities (rows in [0, 1] summing to 1)",
        passed="the model outputs logits",
        masking=False,
    ),
    "attack-not-converged": CheckSpec(
        "Attack not converged",
        "The mean loss of the still-robust samples over the last 10 % of PGD steps, and the "
        "samples broken in those steps (from each sample's success step).",
        "Warns when the loss still rises and the attack broke at least 5 samples (and 2 % of "
        "those attacked) in those steps.",
        remedy="Run more steps (or APGD, which adapts its step size) until the loss stops rising",
        flagged="the loss of the still-robust samples was still rising over the last 10 % of "
        "steps, and the attack was still breaking samples there",
        passed="the iterative attacks' loss had levelled off",
        masking=False,
    ),
    "silent-success": CheckSpec(
        "Silent success",
        "Samples an intermediate iterate fooled but the last one did not (counted as broken "
        "here; a last-iterate evaluation would miss them), in the runs that went on after a "
        "sample's first success: without early stopping, or targeted and stopping only at the "
        "target. A run that stops a sample at its first success (the default, and the "
        "independent sweep's) cannot show one.",
        "Warns at 5 samples and 2 % of those attacked; not applicable when every iterative run "
        "stopped early (set early_stop = false on the swept attack to observe it).",
        remedy="Keep the best iterate, not the last (as this audit does) when reporting robust "
        "accuracy; to observe silent successes, set early_stop = false on the swept attack "
        "in a suite file (its sweeps then run every step)",
        masking=False,
    ),
    "attack-failed": CheckSpec(
        "No attack failed",
        "Attack and sweep runs that raised (out of memory, a library error, a model raising "
        "on some inputs) or could not apply, per norm and epsilon, with their errors. A failed "
        "run broke nothing, so the samples it would have attacked count as robust.",
        "Fails on any failed run: the verdict is then 'evaluation incomplete' and every robust "
        "accuracy at that norm and epsilon an upper bound. An attack that cannot apply (no input "
        "gradient) is listed, not flagged: vanishing-gradients judges that.",
        remedy="Fix the cause (the error says it: memory, a suite value, the model raising on "
        "some inputs) and rerun; a failed attack is evidence of nothing",
        passed="every attack of the suite ran at every norm and epsilon",
        masking=False,
    ),
}
"""Every check, by code, in the order ``analysis.redflags`` runs them."""

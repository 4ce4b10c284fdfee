"""Results of one attack call: frozen dataclasses with shapes in their docstrings.

``K`` is the number of epsilons, ``N`` the number of samples, ``T`` the number of iterations
whose loss is recorded. A suite's results are written into the document as its records
(``core.attackrecords``, made by ``analysis.robustness``).

A row of logits holding NaN or Inf has no prediction: see ``attacks.engine`` for how such
samples are judged and ``nonfinite`` for where they are marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from attacks.tables import CLEAN_INPUT, Field, arguments, declared, per_sample
from attacks.threat import Norm
from core.document import GradientStats


def plain(value: Any, *, keep_nonfinite: bool = False) -> Any:
    """Turn tensors, enums and tuples into JSON-able Python data.

    Args:
        value: what to convert.
        keep_nonfinite: keep NaN and infinite floats as they are (for a writer that encodes
            them, as ``core.document.write_json`` does); by default they become None.
    """
    if isinstance(value, Tensor):
        return plain(value.detach().cpu().tolist(), keep_nonfinite=keep_nonfinite)
    if isinstance(value, Norm):
        return value.value
    if isinstance(value, float):
        return value if keep_nonfinite or math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v, keep_nonfinite=keep_nonfinite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, keep_nonfinite=keep_nonfinite) for v in value]
    return value


STEP_NOT_BROKEN = -1
"""``success_step`` of a sample the attack did not break."""

STEP_UNKNOWN = -2
"""``success_step`` of a sample the attack broke at an iteration it does not report (the
reference libraries' PGD, APGD and AutoAttack return only their final example)."""


def gradient_stats(
    first_grad_norm: Tensor,
    *,
    vanishing_threshold: float,
    nonfinite_logits: int,
    nonfinite_gradients: int,
) -> GradientStats:
    """The input-gradient health of a run (the document's record), read by the
    gradient-masking checks.

    Args:
        first_grad_norm: ``[K, N]`` L2 norm of each sample's first input gradient at each
            epsilon, NaN where it was not measured (``AttackResult.first_grad_norm``).
        vanishing_threshold: a gradient whose L2 norm is below this counts as vanishing.
        nonfinite_logits: sample evaluations whose logits held NaN or Inf, over the whole run.
        nonfinite_gradients: sample gradients that held NaN or Inf, over the whole run.

    Returns:
        The record, with the fractions of the measured first gradients that are exactly zero
        (``zero_fraction``) and below the threshold (``vanishing_fraction``, zero ones
        included).
    """
    measured = first_grad_norm[~torch.isnan(first_grad_norm)]
    count = max(measured.numel(), 1)
    return GradientStats(
        zero_fraction=float((measured == 0).sum()) / count,
        vanishing_fraction=float((measured < vanishing_threshold).sum()) / count,
        vanishing_threshold=vanishing_threshold,
        nonfinite_logits=nonfinite_logits,
        nonfinite_gradients=nonfinite_gradients,
    )


@dataclass(frozen=True)
class AttackResult:
    """What one attack call returns.

    Each per-sample table is declared once, in its attribute's metadata
    (``attacks.tables.per_sample``: its fill where a sample was not attacked, dtype and shape);
    ``PER_SAMPLE_TABLES`` lists them all, and wherever results are assembled (the engine, the
    suite's outcomes, its merged and concatenated results) every declared table is allocated,
    placed, selected and joined through ``attacks.tables``.

    Attributes:
        attack: the attack's name, e.g. ``"pgd-ce"``.
        norm: the threat model's norm.
        epsilons: the ``K`` epsilons, ascending.
        success: ``[K, N]`` bool, the prediction (argmax) at ``adversarial`` is not the label;
            judged on that projected, clipped example; a clean misclassification counts, and so
            does a sample whose clean logits are not finite (it is not correctly classified);
            an example whose logits are not finite is never a success.
        adversarial: ``[K, N, ...]`` the returned example: the first that fooled the model,
            else the one with the highest objective (``keep="last"``: the last iterate).
        margin: ``[K, N]`` true-label margin ``z_y - max_{j!=y} z_j`` at ``adversarial``;
            negative when ``success``, zero at a tie, NaN where those logits are not finite.
        last_success: ``[K, N]`` bool, success of the final iterate (PGD); where it is False
            and ``success`` True an intermediate iterate fooled the model ("silent success").
            With early stopping a fooled sample stops, so its final iterate is the fooling one.
        attacked: ``[K, N]`` bool, the sample was attacked at that epsilon; False where it was
            misclassified clean or inherited its example from a smaller epsilon.
        loss_trace: ``[K, T + 1, N]`` the objective at the start and after each iteration (of
            the first restart), NaN where the sample was not evaluated.
        objective: the objective in ``loss_trace``, maximised by the attack (e.g. ``"ce"``).
        queries: ``[K, N]`` int64 sample evaluations spent on each sample at each epsilon.
        num_forward: sample-forward passes in total (one sample through the model once).
        num_backward: sample-backward passes in total.
        wall_time: seconds.
        seed: the initial seed of the generator the attack drew from.
        nonfinite: ``[K, N]`` bool, the logits the engine judged held NaN or Inf: at the
            returned example where ``attacked``, else at the clean input (such a sample is not
            attacked and counts as a clean error).
        nonfinite_evaluations: sample evaluations whose logits held NaN or Inf over the whole
            call (clean pass, the attack's own queries, the engine's judging passes).
        backend: ``"native"``, ``"cleverhans"``, ``"torchattacks"`` or ``"pyautoattack"``.
        params: the attack's settings (numbers, strings, booleans).
        gradient_stats: for gradient attacks, else None (``gradient_stats``).
        first_grad_norm: ``[K, N]`` L2 norm of each sample's first input gradient at each
            epsilon (at the start point), NaN where the sample was not attacked; for gradient
            attacks, else None.
        targets: ``[K, N]`` int64 target class of the returned example (targeted attacks;
            -1 where no target was attacked), else None.
        target_success: ``[K, N]`` bool, prediction equals the target (targeted), else None.
        success_step: ``[K, N]`` int64, the iteration at which the sample was first broken:
            0 for a clean misclassification (or a start point that already fools), ``t >= 1``
            after ``t`` steps (PGD: iterate ``t`` of the run, restart or target, that first
            broke it; FGSM: 1; noise: the draw; Square: the query of its run),
            ``STEP_NOT_BROKEN`` (-1) where ``success`` is False, ``STEP_UNKNOWN`` (-2) where
            the attack does not say. An inherited example keeps its step.
    """

    attack: str
    norm: Norm
    epsilons: tuple[float, ...]
    success: Tensor = field(metadata=per_sample(fill=False, kind="bool", inherited=True))
    adversarial: Tensor = field(
        metadata=per_sample(fill=CLEAN_INPUT, kind="float", shape=("K", "N", "..."), inherited=True)
    )
    margin: Tensor = field(
        metadata=per_sample(fill=float("nan"), kind="float", inherited=True, unattacked="merged")
    )
    last_success: Tensor = field(metadata=per_sample(fill=False, kind="bool", inherited=True))
    attacked: Tensor = field(metadata=per_sample(fill=False, kind="bool"))
    loss_trace: Tensor = field(
        metadata=per_sample(fill=float("nan"), kind="float", shape=("K", "T", "N"))
    )
    objective: str
    queries: Tensor = field(metadata=per_sample(fill=0, kind="int64"))
    num_forward: int
    num_backward: int
    wall_time: float
    seed: int
    nonfinite: Tensor = field(
        metadata=per_sample(fill=False, kind="bool", inherited=True, unattacked="outcome")
    )
    nonfinite_evaluations: int = 0
    backend: str = "native"
    params: dict[str, Any] = field(default_factory=dict)
    gradient_stats: GradientStats | None = None
    first_grad_norm: Tensor | None = field(
        default=None, metadata=per_sample(fill=float("nan"), kind="float", optional=True)
    )
    targets: Tensor | None = field(
        default=None, metadata=per_sample(fill=-1, kind="int64", optional=True, inherited=True)
    )
    target_success: Tensor | None = field(
        default=None, metadata=per_sample(fill=False, kind="bool", optional=True, inherited=True)
    )
    success_step: Tensor | None = field(
        default=None, metadata=per_sample(fill=STEP_NOT_BROKEN, kind="int64", inherited=True)
    )

    @property
    def robust_accuracy(self) -> list[float]:
        """Fraction of samples not broken, one value per epsilon."""
        return (~self.success).double().mean(dim=1).tolist()

    @property
    def mean_loss_trace(self) -> Tensor:
        """``[K, T + 1]`` mean objective over the samples evaluated at each iteration."""
        return self.loss_trace.nanmean(dim=2)


PER_SAMPLE_TABLES: tuple[Field, ...] = declared(AttackResult)
"""Every per-sample table of ``AttackResult``, each with its fill, dtype, shape and rules (see
``attacks.tables``)."""


def combine(
    results: Sequence[AttackResult], tables: Mapping[str, Tensor | None], **changes: Any
) -> AttackResult:
    """One result of the runs ``results``, whose per-sample tables, already joined, are
    ``tables``: calls of one stage on parts of its samples (``attacks.shards``), or one
    attack's runs at each epsilon (``attacks.outcomes``).

    Args:
        results: the runs, each once, the first giving the settings (attack, objective,
            backend, parameters, seed, ...).
        tables: the joined tables; None for an optional table the result does not have.
        changes: attributes of the joined result that differ from the first run's (its
            epsilons, its seed).

    Returns:
        The first run with ``tables`` and ``changes``, its counts and time the sums over the
        runs, and its gradient statistics (where the first run has them and ``tables`` holds
        first gradients) those of the joined first gradients, with the runs' non-finite
        counts summed.
    """
    first = results[0]
    norms = tables.get("first_grad_norm")
    stats = None
    if first.gradient_stats is not None and norms is not None:
        parts = [r.gradient_stats for r in results if r.gradient_stats is not None]
        stats = gradient_stats(
            norms,
            vanishing_threshold=first.gradient_stats.vanishing_threshold,
            nonfinite_logits=sum(p.nonfinite_logits for p in parts),
            nonfinite_gradients=sum(p.nonfinite_gradients for p in parts),
        )
    return replace(
        first,
        **arguments(tables, PER_SAMPLE_TABLES),
        num_forward=sum(r.num_forward for r in results),
        num_backward=sum(r.num_backward for r in results),
        wall_time=sum(r.wall_time for r in results),
        nonfinite_evaluations=sum(r.nonfinite_evaluations for r in results),
        gradient_stats=stats,
        **changes,
    )

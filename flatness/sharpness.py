"""ε-sharpness (Keskar et al. 2017) by projected sign-gradient ascent in a box."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.flatrecords import SharpnessEstimate
from flatness.core import (
    FunctionalModel,
    Mode,
    batches,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    dropout_seeds,
    in_mode,
    loss_and_gradient,
    loss_pass,
    make_provenance,
    parse_mode,
)
from flatness.stats import MeanAccumulator


def epsilon_sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    epsilon: float = 1e-3,
    num_steps: int = 10,
    rel_step_size: float = 0.25,
    batch_size: int = 256,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
) -> SharpnessEstimate:
    """Largest relative loss increase within a box of relative size ε around θ: the
    ε-sharpness 100 · (max_{z ∈ C_ε} L(θ + z) - L(θ)) / (1 + L(θ)) in the box
    C_ε = {z : |z_i| <= ε (|θ_i| + 1)}. The maximum is searched, not certified, so the value
    is a lower bound on the true sharpness.

    Each step moves every coordinate by ``rel_step_size`` times its half-width in the direction
    of the sign of the full-data gradient (the steepest ascent for a box), then clips back into
    the box; the best point among all iterates is kept. Keskar et al. maximise with L-BFGS-B
    instead; a handful of sign steps reaches the same corner-seeking maximiser for small ε.

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        generator: Source of dropout draws in train mode (ascent itself is deterministic).
        epsilon: Relative box size ε (Keskar et al. use 1e-3 and 5e-4).
        num_steps: Ascent steps, each one forward-backward sweep over the data.
        rel_step_size: Step as a fraction of each coordinate's half-width ε (|θ_i| + 1).
        batch_size: Samples per forward pass.
        mode: ``"eval"`` or ``"train"`` (the same fixed dropout draws at every point).
        num_mc_samples: Dropout draws per batch in train mode.

    Returns:
        The sharpness in percent, as Keskar et al. report it (``value``), with its standard
        error over the N samples at the maximiser found (the paired per-sample loss
        increases, the denominator treated as fixed; None when undefined), L(θ)
        (``base_loss``) and the largest mean loss found in the box (``max_loss``).
    """
    mode = parse_mode(mode)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    for name, value in (
        ("epsilon", epsilon),
        ("num_steps", num_steps),
        ("rel_step_size", rel_step_size),
    ):
        check_positive(name, value)
    fmodel = FunctionalModel(model)
    theta = fmodel.params
    data = list(batches(x, y, batch_size, fmodel))
    seeds = [dropout_seeds(generator, mode, num_mc_samples) for _ in data]
    half_widths = {n: epsilon * (p.abs() + 1) for n, p in theta.items()}
    offset = {n: torch.zeros_like(p) for n, p in theta.items()}
    with in_mode(model, mode):
        base, gradient = loss_and_gradient(fmodel, data, theta, seeds)
        best = base
        for step in range(1, num_steps + 1):
            offset = {
                n: torch.clamp(
                    z + rel_step_size * half_widths[n] * gradient[n].sign(),
                    -half_widths[n],
                    half_widths[n],
                )
                for n, z in offset.items()
            }
            point = {n: theta[n] + offset[n] for n in theta}
            if step < num_steps:
                current, gradient = loss_and_gradient(fmodel, data, point, seeds)
            else:  # no step follows the last point, so its gradient is not needed
                current = loss_pass(fmodel, data, point, seeds)
            if current.losses.mean() > best.losses.mean():
                best = current
    increase = MeanAccumulator()
    increase.update(best.losses - base.losses)
    base_loss = base.losses.mean().item()
    scale = 100.0 / (1.0 + base_loss)
    definition = (
        "100 · (max over |z_i| <= ε(|θ_i| + 1) of L(θ + z) - L(θ)) / (1 + L(θ)), L the mean "
        f"cross-entropy over the data, maximum searched by {num_steps} sign-gradient steps"
    )
    return SharpnessEstimate(
        value=float(scale * increase.mean),
        stderr=defined(scale * increase.stderr),
        epsilon=defined(epsilon),
        base_loss=defined(base_loss),
        max_loss=defined(best.losses.mean().item()),
        num_steps=num_steps,
        num_draws=None,
        minibatch_size=None,
        stopped_by=None,
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )

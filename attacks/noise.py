"""Random-noise search: many uniform draws in the epsilon ball, a baseline no defence may fail.

If random noise breaks samples that a gradient attack at the same epsilon does not, the
gradients are misleading the attack. Under L∞ the draws alternate between corners of the cube
(every coordinate at plus or minus epsilon) and uniform interior points; under L2 they are
uniform on the sphere of radius epsilon. Every draw is clipped to the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks._engine import Batch, BatchOutcome, run_attack, setup
from attacks.losses import fooled, judged_margin
from attacks.result import AttackResult
from attacks.threat import Bounds, Norm, geometry


def random_noise(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm | str = Norm.LINF,
    num_draws: int = 100,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
) -> AttackResult:
    """Search the ball with ``num_draws`` random points per sample; keep the first that fools.

    A sample stops drawing once fooled. The returned example of an unbroken sample is the draw
    with the smallest margin.

    Args:
        model: maps inputs ``[N, ...]`` in ``bounds`` to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: ascending, non-negative radii.
        norm: ``"linf"`` or ``"l2"``.
        num_draws: random points per sample and epsilon.
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: the input box.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0).

    Returns:
        ``AttackResult`` with ``T = num_draws``: the trace holds the margin loss ``-margin``
        of the clean input and of each draw.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be at least 1, got {num_draws}")
    config = setup(
        model, x, y, epsilons, norm=norm, bounds=bounds, generator=generator, eot_samples=1
    )
    geom = geometry(config.norm)

    def attack(batch: Batch) -> BatchOutcome:
        n = batch.y.numel()
        best = batch.x0.clone()
        best_logits = batch.clean_logits.clone()
        best_margin = judged_margin(best_logits, batch.y)
        trace = torch.full((num_draws + 1, n), float("nan"), dtype=x.dtype, device=x.device)
        trace[0] = -best_margin
        queries = torch.zeros_like(batch.y)
        first = torch.full_like(batch.y, -1)
        active = torch.arange(n, device=x.device)
        for draw in range(num_draws):
            candidate = geom.surface_draw(
                batch.x0[active], batch.eps[active], config.generator, draw
            ).clamp_(config.bounds.lower, config.bounds.upper)
            logits = config.evaluator.logits(candidate)
            # A draw whose logits are not finite has no margin: it never becomes the best.
            value = judged_margin(logits, batch.y[active])
            queries[active] += 1
            trace[draw + 1, active] = -value.to(x.dtype)
            better = value < best_margin[active]
            chosen = active[better]
            best[chosen] = candidate[better]
            best_logits[chosen] = logits[better]
            best_margin[chosen] = value[better]
            broken = fooled(logits, batch.y[active])
            first[active[broken]] = draw + 1
            active = active[~broken]
            if active.numel() == 0:
                break
        return BatchOutcome(
            adversarial=best,
            logits=best_logits,
            last_success=fooled(best_logits, batch.y),
            loss_trace=trace,
            queries=queries,
            success_step=first,
        )

    return run_attack(
        "noise",
        model,
        x,
        y,
        config,
        attack,
        trace_length=num_draws + 1,
        objective="cw",
        nested=nested,
        batch_size=batch_size,
        stochastic=stochastic,
        params={"num_draws": num_draws, "nested": nested, "stochastic": stochastic},
        backend="native",
        gradients=False,
    )

"""Random-noise search: many uniform draws in the epsilon ball, a baseline no defence may fail.

If random noise breaks samples that a gradient attack at the same epsilon does not, the
gradients are misleading the attack. Under L∞ the draws alternate between corners of the cube
(every coordinate at plus or minus epsilon) and uniform interior points; under L2 they are
uniform on the sphere of radius epsilon. Every draw is clipped to the box.

Each sample draws from its own stream (see ``attacks.engine``): at the ``k``-th epsilon,
its ``epsilon_stream(k)`` gives its draws in blocks of ``noise_block(num_draws, d)`` draws of
``d`` values each (``d`` the number of its coordinates; uniforms under L∞, normals under L2),
one block per call, drawn when the sample reaches the block's first draw. Its draws thus do
not depend on the batch it falls in or on the other samples; a block holds several draws so
that a sample costs one call to its generator per block, not per draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks.call import prepare
from attacks.engine import Batch, BatchResult, epsilon_stream
from attacks.losses import fooled, judged_margin
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm, geometry

NOISE_BLOCK_VALUES = 2**13
"""At most this many values per sample in one block of draws (a few tens of kB in float32)."""


def noise_block(num_draws: int, sample_size: int) -> int:
    """Draws per block: as many as ``NOISE_BLOCK_VALUES`` allows, at least one, at most all.

    Args:
        num_draws: draws per sample and epsilon.
        sample_size: coordinates of one sample.
    """
    return max(1, min(num_draws, NOISE_BLOCK_VALUES // max(1, sample_size)))


def random_noise(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    num_draws: int = 100,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Search the ball with ``num_draws`` random points per sample; keep the first that fools.

    A sample stops drawing once fooled. The returned example of an unbroken sample is the draw
    with the smallest margin.

    Args:
        model: maps inputs ``[N, ...]`` in ``bounds`` to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii (a single number gives one
            row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        num_draws: random points per sample and epsilon.
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: the input box.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0); one seed is drawn from
            it, and each sample's draws come from that sample's own stream.
        sample_ids: int64 ``[N]``, distinct: the samples' identities in the whole evaluation
            set (default ``arange(N)``). A sample's draws depend on its id and the generator
            only, so its result does not depend on the batch or the other samples.

    Returns:
        ``AttackResult`` with ``T = num_draws``: the trace holds the margin loss ``-margin``
        of the clean input and of each draw.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be at least 1, got {num_draws}")
    call = prepare(model, x, y, epsilons, (norm, bounds), (generator, sample_ids))
    config = call.config
    geom = geometry(config.norm)

    def attack(batch: Batch) -> BatchResult:
        n = batch.y.numel()
        best = batch.x0.clone()
        best_logits = batch.clean_logits.clone()
        best_margin = judged_margin(best_logits, batch.y)
        trace = torch.full((num_draws + 1, n), float("nan"), dtype=x.dtype, device=x.device)
        trace[0] = -best_margin
        queries = torch.zeros_like(batch.y)
        first = torch.full_like(batch.y, -1)
        active = torch.arange(n, device=x.device)
        streams = config.streams(batch.index, epsilon_stream(batch.k))
        block = noise_block(num_draws, batch.x0[0].numel())
        noise, rows = batch.x0[:0], active
        for draw in range(num_draws):
            if draw % block == 0:
                sources = [streams[i] for i in active.tolist()]
                shape = (active.numel(), block, *batch.x0.shape[1:])
                noise = geom.surface_noise(shape, batch.x0, sources)
                # Row of each active sample in the block; the block itself is never compacted.
                rows = torch.arange(active.numel(), device=x.device)
            candidate = geom.surface_point(
                batch.x0[active], batch.eps[active], noise[rows, draw % block], draw
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
            active, rows = active[~broken], rows[~broken]
            if active.numel() == 0:
                break
        return BatchResult(
            adversarial=best,
            logits=best_logits,
            last_success=fooled(best_logits, batch.y),
            loss_trace=trace,
            queries=queries,
            success_step=first,
        )

    return call.run(
        "noise",
        attack,
        engine=(nested, batch_size, stochastic),
        trace_length=num_draws + 1,
        objective="cw",
        params={"num_draws": num_draws, "nested": nested, "stochastic": stochastic},
        backend="native",
        gradients=False,
    )

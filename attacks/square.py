"""Square attack (Andriushchenko et al.) through the authors' implementation in pyautoattack.

A score-based black-box attack: no gradients, so gradient masking cannot hide from it. Each
epsilon runs ``SquareAttack.attack_single_run`` on the samples still correctly classified,
with a seed drawn from the explicit generator; the global RNG it uses is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks._engine import Batch, BatchOutcome, run_attack, setup
from attacks.losses import fooled, is_finite_rows, judged_margin, margin
from attacks.result import AttackResult
from attacks.threat import Bounds, Norm
from torchutil import draw_seed, seeded_global_rng, torch_default_device

_STENCILS: dict[tuple[str, int, int, str], Tensor] = {}


def square_attack_class() -> type:
    """pyautoattack's ``SquareAttack`` with its L2/L1 window stencils memoised.

    ``eta_rectangles`` builds a fixed ``x × y`` stencil with a Python loop of small tensor
    operations at every iteration; it draws nothing, so caching it per size changes neither
    the random stream nor any result (the tests compare both classes bit for bit) and saves
    about 5 % of an L2 run's time on MNIST. ``margin_and_loss`` scores a query with NaN or
    Inf logits as the attacker's worst (finite logits: pyautoattack's values bit for bit).
    """
    from pyautoattack.square import SquareAttack

    class MemoisedSquareAttack(SquareAttack):
        def margin_and_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            # pyautoattack's margin (``z_y - max_{j != y} z_j``, the same operations), except
            # that a query whose logits are not finite scores the largest float, the worst
            # point for the attacker: never accepted, never counted as fooled, and the search
            # goes on. A NaN margin would drop the sample from the search (and an empty search
            # crashes pyautoattack's L2 step), an infinite logit would count as a success, and
            # +inf itself turns into NaN in pyautoattack's blend ``0 * margin + 1 * best``.
            if self.loss != "margin" or self.targeted:
                return super().margin_and_loss(x, y)
            logits = self.predict(x)
            worst = torch.finfo(logits.dtype).max
            value = torch.where(is_finite_rows(logits), margin(logits, y), worst)
            return value, value.clone()

        def eta_rectangles(self, x: int, y: int) -> Tensor:
            key = (self.norm, x, y, str(self.device))
            stencil = _STENCILS.get(key)
            if stencil is None:
                stencil = _STENCILS[key] = super().eta_rectangles(x, y)
            return stencil.clone()

    return MemoisedSquareAttack


def check_unit_box(name: str, bounds: Bounds) -> None:
    """pyautoattack clips to ``[0, 1]``; refuse other bounds instead of clipping wrongly."""
    if (bounds.lower, bounds.upper) != (0.0, 1.0):
        raise ValueError(
            f"{name} runs through pyautoattack, which clips to [0, 1]; got bounds "
            f"({bounds.lower}, {bounds.upper}); rescale the model's input to [0, 1]"
        )


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm | str = Norm.LINF,
    num_queries: int = 5000,
    p_init: float = 0.8,
    num_restarts: int = 1,
    rescale_schedule: bool = False,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Square attack under L∞ or L2 for many epsilons in one call.

    Args:
        model: maps inputs ``[N, C, H, W]`` in ``[0, 1]`` to logits ``[N, classes]``.
        x: clean images ``[N, C, H, W]``; never modified.
        y: true labels ``[N]``.
        epsilons: ascending, non-negative radii.
        norm: ``"linf"`` or ``"l2"``.
        num_queries: iterations per restart (AutoAttack: 5000).
        p_init: initial fraction of pixels in a square (AutoAttack: 0.8).
        num_restarts: runs, each on the samples earlier runs did not fool.
        rescale_schedule: stretch the schedule of square sizes to ``num_queries`` (useful
            for small budgets); AutoAttack keeps the schedule of 10000 queries (False).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: must be ``(0, 1)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0).
        sample_ids: int64 ``[N]``, distinct: the samples' identities (default ``arange(N)``);
            checked, but pyautoattack draws per batch from torch's global RNG, so a sample's
            result depends on its batch (``registry.batch_independent`` is False).

    Returns:
        ``AttackResult`` with ``T = 1`` (the margin loss at the clean input and at the
        returned example; pyautoattack does not expose its iterations), ``queries`` as
        counted by pyautoattack and ``success_step`` from that count (the iteration of the
        run that fooled the sample; pyautoattack stops counting a sample once fooled).
    """
    if x.dim() != 4:
        raise ValueError(f"Square needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if num_queries < 1 or num_restarts < 1 or not 0 < p_init <= 1:
        raise ValueError(
            "Square needs num_queries >= 1, num_restarts >= 1 and 0 < p_init <= 1, got "
            f"{num_queries}, {num_restarts}, {p_init}"
        )
    config = setup(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        bounds=bounds,
        generator=generator,
        eot_samples=1,
        sample_ids=sample_ids,
    )
    check_unit_box("Square", config.bounds)
    evaluator = config.evaluator

    square_class = square_attack_class()

    def attack(batch: Batch) -> BatchOutcome:
        square_attack = square_class(
            evaluator.logits,
            norm="Linf" if config.norm is Norm.LINF else "L2",
            n_queries=num_queries,
            eps=float(batch.eps[0]),
            p_init=p_init,
            n_restarts=1,
            loss="margin",
            resc_schedule=rescale_schedule,
            device=x.device,
        )
        square_attack.init_hyperparam(batch.x0)
        adversarial = batch.x0.clone()
        queries = torch.zeros_like(batch.y)
        # pyautoattack counts one query for the start point and one per iteration until a
        # sample is fooled, so a fooled sample's count minus one is the iteration of its run.
        last_run_queries = torch.zeros_like(batch.y)
        todo = torch.arange(batch.y.numel(), device=x.device)
        for restart in range(num_restarts):
            if restart > 0:
                logits = evaluator.logits(adversarial[todo])
                todo = todo[~fooled(logits, batch.y[todo])]
                if todo.numel() == 0:
                    break
            # pyautoattack draws its noise on the default device and then moves it
            # (``torch.randn(x.shape).to(self.device)``), so it runs with torch's own default.
            with seeded_global_rng(draw_seed(config.generator), x.device), torch_default_device():
                used, found = square_attack.attack_single_run(batch.x0[todo], batch.y[todo])
            adversarial[todo] = found
            queries[todo] += used.long()
            last_run_queries[todo] = used.long()
        logits = evaluator.logits(adversarial)
        broken = fooled(logits, batch.y)
        trace = torch.stack(
            [-judged_margin(batch.clean_logits, batch.y), -judged_margin(logits, batch.y)]
        )
        return BatchOutcome(
            adversarial=adversarial,
            logits=logits,
            last_success=broken,
            loss_trace=trace,
            queries=queries,
            success_step=torch.where(broken, last_run_queries - 1, -1),
        )

    return run_attack(
        "square",
        model,
        x,
        y,
        config,
        attack,
        trace_length=2,
        objective="cw",
        nested=nested,
        batch_size=batch_size,
        stochastic=stochastic,
        params={
            "num_queries": num_queries,
            "p_init": p_init,
            "num_restarts": num_restarts,
            "rescale_schedule": rescale_schedule,
            "nested": nested,
            "stochastic": stochastic,
        },
        backend="pyautoattack",
        gradients=False,
    )

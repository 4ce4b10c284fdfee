"""The fast gradient sign method (L∞) and its L2 form, the fast gradient method.

One step of length epsilon along the normalised input gradient at the clean input, then the
clip to the box. The gradient does not depend on epsilon, so it is computed once per sample
and shared by every epsilon of the call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks import backends
from attacks.call import prepare
from attacks.engine import Batch, BatchResult
from attacks.losses import describe, fooled, objective, zero_nonfinite_
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm, geometry


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    loss: str = "ce",
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    eot_samples: int = 1,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """FGSM (``norm="linf"``) or FGM (``norm="l2"``) for many epsilons in one call.

    ``x_adv = clip(x + eps * normalize(grad_x loss(model(x), y)))`` with ``normalize`` the sign
    (L∞) or division by the L2 norm (L2).

    Args:
        model: maps inputs ``[N, ...]`` in ``bounds`` to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii (a single number gives one
            row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"``, ``"cw"`` or ``"dlr"`` (native backend only).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: the input box.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        eot_samples: forward passes averaged per gradient (EOT).
        backend: ``"native"``, ``"cleverhans"`` or ``"torchattacks"``.
        generator: a ``torch.Generator`` or an int seed (default 0); FGSM itself draws
            nothing, but a stochastic model's layers do.
        sample_ids: int64 ``[N]``, distinct: the samples' identities in the whole evaluation
            set (default ``arange(N)``); checked, and unused, as FGSM draws nothing.

    Returns:
        ``AttackResult`` with ``T = 1``: the trace holds the objective at the clean input and
        at the adversarial example.
    """
    backends.check_settings(backend, loss=loss, eot_samples=eot_samples)
    call = prepare(
        model, x, y, epsilons, (norm, bounds), (generator, sample_ids), eot_samples=eot_samples
    )
    config = call.config
    geom = geometry(config.norm)
    # The gradient is shared by every epsilon: cache each sample's unit step and clean loss.
    directions = torch.zeros_like(x)
    clean_loss = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    grad_norm = torch.zeros_like(clean_loss)
    known = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def attack(batch: Batch) -> BatchResult:
        if backend != "native":
            return backends.fgsm_batch(backend, config, batch)
        objective_fn = objective(loss, targeted=False, num_classes=batch.clean_logits.shape[1])
        missing = batch.index[~known[batch.index]]
        if missing.numel():
            labels = y[missing].to(x.device).long()
            _, value, grad = config.evaluator.value_and_grad(
                x[missing], lambda logits: objective_fn(logits, labels, None)
            )
            grad_norm[missing] = grad.flatten(1).norm(dim=1).to(x.dtype)
            directions[missing] = geom.normalize(zero_nonfinite_(grad))
            clean_loss[missing] = value.to(x.dtype)
            known[missing] = True
        fresh = torch.isin(batch.index, missing)
        radius = batch.eps.reshape(-1, *([1] * (x.dim() - 1)))
        adversarial = (batch.x0 + radius * directions[batch.index]).clamp_(
            config.bounds.lower, config.bounds.upper
        )
        logits = config.evaluator.logits(adversarial)
        trace = torch.stack(
            [clean_loss[batch.index], objective_fn(logits, batch.y, None).to(x.dtype)]
        )
        return BatchResult(
            adversarial=adversarial,
            logits=logits,
            last_success=fooled(logits, batch.y),
            loss_trace=trace,
            queries=(fresh.long() + 1) * config.evaluator.eot_samples,
            first_grad_norm=grad_norm[batch.index],
            success_step=torch.ones_like(batch.y),
        )

    native = backend == "native"
    return call.run(
        "fgsm",
        attack,
        engine=(nested, batch_size, stochastic),
        trace_length=2 if native else 1,
        objective=describe(loss, targeted=False),
        params={
            "loss": loss,
            "nested": nested,
            "eot_samples": eot_samples,
            "stochastic": stochastic,
        },
        backend=backend,
        gradients=native,
    )

"""FGSM and PGD computed by a trusted library instead of the native loop.

``backend="cleverhans"`` calls ``cleverhans.torch`` (``fast_gradient_method``,
``projected_gradient_descent``); ``backend="torchattacks"`` calls ``torchattacks`` (``FGSM``,
``PGD``, ``PGDL2``). Their adversarial examples are judged here exactly as native ones (one
forward pass on the returned example), so any native number can be reproduced with a library.
The libraries return their final iterate; their random starts draw from the global RNG, which
the engine seeds from the explicit generator. Both are imported only when used. They do not
say at which iteration a sample fell: PGD's ``success_step`` is unknown (-2) where broken,
FGSM's is its single step (1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attacks.engine import Batch, BatchResult, Setup
from attacks.evaluator import CountingModule, library_gradients
from attacks.losses import fooled, objective
from attacks.threat import Norm
from torchutil import apply_mode

BACKENDS = ("native", "cleverhans", "torchattacks")


def check(backend: str) -> None:
    """Raise ``ValueError`` for an unknown backend name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def unsupported(
    backend: str,
    *,
    loss: str,
    eot_samples: int,
    target_mode: str | None = None,
    step_fraction: float | None = None,
) -> str | None:
    """Why ``backend`` cannot compute these settings, or None when it can.

    The libraries compute the cross-entropy without EOT, with one target per sample; only the
    native loop has the other losses, EOT and ``target_mode="all"``. cleverhans also refuses a
    PGD step longer than epsilon. This is the one rule the attack functions enforce and the
    registry checks suite files with.

    Args:
        backend: one of ``BACKENDS``.
        loss: the objective asked for.
        eot_samples: forward passes per gradient asked for.
        target_mode: the targeted attack's mode; None for an untargeted attack.
        step_fraction: PGD's largest step as a multiple of epsilon, where known.

    Returns:
        the error message (what was asked, what the library computes, the fix), or None.
    """
    if backend == "native":
        return None
    asked = [
        f"{name}={value!r}"
        for name, value, honoured in (("loss", loss, "ce"), ("eot_samples", eot_samples, 1))
        if value != honoured
    ]
    if target_mode in ("all", "top"):
        asked.append(f"target_mode={target_mode!r}")
    if not asked:
        if backend == "cleverhans" and step_fraction is not None and step_fraction > 1:
            return (
                "backend 'cleverhans' takes PGD steps of at most epsilon, got a step of "
                f"{step_fraction:g} epsilon; set rel_step_size <= 1 (the default is "
                "2.5 / num_steps), or use backend='native' or 'torchattacks'"
            )
        return None
    honoured = "loss='ce', eot_samples=1" + (
        " and one target per sample" if target_mode is not None else ""
    )
    return (
        f"backend {backend!r} supports {honoured} only, got {', '.join(asked)}; "
        "use backend='native'"
    )


def check_settings(
    backend: str,
    *,
    loss: str,
    eot_samples: int,
    target_mode: str | None = None,
    step_fraction: float | None = None,
) -> None:
    """Raise ``ValueError`` for an unknown backend or settings it cannot compute."""
    check(backend)
    problem = unsupported(
        backend,
        loss=loss,
        eot_samples=eot_samples,
        target_mode=target_mode,
        step_fraction=step_fraction,
    )
    if problem is not None:
        raise ValueError(problem)


def check_bounds(backend: str, config: Setup) -> None:
    if backend == "torchattacks" and (config.bounds.lower, config.bounds.upper) != (0.0, 1.0):
        raise ValueError(
            "torchattacks clips to [0, 1], got bounds "
            f"({config.bounds.lower}, {config.bounds.upper}); use backend='cleverhans' or "
            "'native', or rescale the model's input to [0, 1]"
        )


def _torchattacks_pgd(
    model: CountingModule,
    norm: Norm,
    eps: float,
    step: float,
    num_steps: int,
    random_start: bool,
    stochastic: bool,
) -> object:
    import torchattacks

    attack_class = torchattacks.PGD if norm is Norm.LINF else torchattacks.PGDL2
    attack = attack_class(model, eps=eps, alpha=step, steps=num_steps, random_start=random_start)
    if stochastic:
        attack.set_model_training_mode(model_training=True, dropout_training=True)
    return attack


def _library_pgd(
    backend: str,
    config: Setup,
    x0: Tensor,
    labels: Tensor,
    eps: float,
    step: float,
    targets: Tensor | None,
    num_steps: int,
    random_start: bool,
) -> Tensor:
    wrapper = CountingModule(config.evaluator)
    stochastic = config.evaluator.model.training
    if backend == "torchattacks":
        attack = _torchattacks_pgd(
            wrapper, config.norm, eps, step, num_steps, random_start, stochastic
        )
        if targets is not None:
            attack.set_mode_targeted_by_label(quiet=True)  # type: ignore[attr-defined]
        adversarial = attack(x0, labels if targets is None else targets)  # type: ignore[operator]
        # torchattacks restores the wrapper's flag with model.train(), which would also switch
        # batch normalisation; put the requested mode back.
        apply_mode(config.evaluator.model, train=stochastic)
        return adversarial
    from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

    return projected_gradient_descent(
        wrapper,
        x0,
        eps,
        step,
        num_steps,
        math.inf if config.norm is Norm.LINF else 2,
        clip_min=config.bounds.lower,
        clip_max=config.bounds.upper,
        y=labels if targets is None else targets,
        targeted=targets is not None,
        rand_init=random_start,
        sanity_checks=False,
    )


def pgd_batch(
    backend: str,
    config: Setup,
    batch: Batch,
    step: Tensor,
    targets: Tensor | None,
    *,
    num_steps: int,
    random_start: bool,
    num_restarts: int,
) -> BatchResult:
    """PGD on one batch through a library, restarts on the samples not yet fooled."""
    check_bounds(backend, config)
    x0, labels = batch.x0, batch.y
    eps, alpha = float(batch.eps[0]), float(step[0])
    if eps == 0:
        # The clean input is the only point of a zero ball; torchattacks' L2 projection would
        # divide zero by zero there.
        return _outcome(batch, x0.clone(), batch.clean_logits, torch.zeros_like(labels), targets)
    adversarial = x0.clone()
    logits = batch.clean_logits.clone()
    done = torch.zeros_like(labels, dtype=torch.bool)
    queries = torch.zeros_like(labels)
    for _ in range(num_restarts):
        todo = (~done).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        with library_gradients(config.evaluator.model, x0):
            result = _library_pgd(
                backend,
                config,
                x0[todo],
                labels[todo],
                eps,
                alpha,
                None if targets is None else targets[todo],
                num_steps,
                random_start,
            ).to(x0.dtype)
        result_logits = config.evaluator.logits(result)
        queries[todo] += num_steps + 1
        adversarial[todo] = result
        logits[todo] = result_logits.to(logits.dtype)
        done[todo] = fooled(result_logits, labels[todo])
    return _outcome(batch, adversarial, logits, queries, targets)


def fgsm_batch(backend: str, config: Setup, batch: Batch) -> BatchResult:
    """FGSM (L∞) or FGM (L2) on one batch through a library."""
    with library_gradients(config.evaluator.model, batch.x0):
        return _fgsm_batch(backend, config, batch)


def _fgsm_batch(backend: str, config: Setup, batch: Batch) -> BatchResult:
    check_bounds(backend, config)
    eps = float(batch.eps[0])
    wrapper = CountingModule(config.evaluator)
    if eps == 0:
        return _outcome(
            batch, batch.x0.clone(), batch.clean_logits, torch.zeros_like(batch.y), None
        )
    if backend == "torchattacks":
        import torchattacks

        stochastic = config.evaluator.model.training
        if config.norm is Norm.LINF:
            attack = torchattacks.FGSM(wrapper, eps=eps)
        else:
            # torchattacks has no FGM; one PGDL2 step of length eps from the clean input is it.
            attack = torchattacks.PGDL2(wrapper, eps=eps, alpha=eps, steps=1, random_start=False)
        if stochastic:
            attack.set_model_training_mode(model_training=True, dropout_training=True)
        adversarial = attack(batch.x0, batch.y)
        apply_mode(config.evaluator.model, train=stochastic)
    else:
        from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

        adversarial = fast_gradient_method(
            wrapper,
            batch.x0,
            eps,
            math.inf if config.norm is Norm.LINF else 2,
            clip_min=config.bounds.lower,
            clip_max=config.bounds.upper,
            y=batch.y,
        )
    adversarial = adversarial.detach().to(batch.x0.dtype)
    logits = config.evaluator.logits(adversarial)
    queries = torch.full_like(batch.y, 2)
    outcome = _outcome(batch, adversarial, logits, queries, None)
    outcome.success_step = torch.ones_like(batch.y)
    return outcome


def _outcome(
    batch: Batch, adversarial: Tensor, logits: Tensor, queries: Tensor, targets: Tensor | None
) -> BatchResult:
    objective_fn = objective("ce", targeted=targets is not None)
    return BatchResult(
        adversarial=adversarial,
        logits=logits,
        last_success=fooled(logits, batch.y),
        loss_trace=objective_fn(logits, batch.y, targets).unsqueeze(0),
        queries=queries,
        targets=targets,
    )

"""Projected gradient descent: untargeted (PGD-CE) and targeted (PGD-T), under L∞ and L2.

This module holds the settings, the targets, the step sizes and the runs of a batch (targets
in turn, each with its restarts); the projected-gradient run itself is ``attacks._descent``.

The native loop draws per sample (see ``attacks.engine``): a random target from the sample's
``TARGET_STREAM`` (one uniform), and at the ``k``-th epsilon, from its ``epsilon_stream(k)``,
one random start per run it takes part in, in the order of the runs (targets in turn, each
with its restarts in turn). Which runs a sample takes part in depends on its own outcomes
only, so its draws, and its result, do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks import backends
from attacks._descent import TARGETED_STOP, UNTARGETED_STOP, Descent, Keep, State, descend
from attacks.call import prepare
from attacks.engine import TARGET_STREAM, Batch, BatchResult, epsilon_stream
from attacks.losses import describe, objective
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm, geometry, uniform

TARGET_MODES = ("random", "next", "least-likely", "all", "top")


def _targets_for(
    mode: str, offset: int | None, y: Tensor, clean_logits: Tensor, draws: Tensor | None
) -> Tensor:
    """Target classes ``[n]``, never the true class.

    Args:
        mode: one of ``TARGET_MODES``; for ``"all"``, ``offset`` picks ``(y + offset) mod C``;
            for ``"top"``, the wrong class of rank ``offset`` (0: the most likely) by clean logit.
        offset: the class offset for mode ``"all"``, the rank for mode ``"top"``.
        y: true labels ``[n]``.
        clean_logits: ``[n, C]`` logits of the clean inputs (for ``"least-likely"``, ``"top"``).
        draws: ``[n]`` uniform draws in ``[0, 1)`` (for ``"random"``).
    """
    num_classes = clean_logits.shape[1]
    if mode == "top":
        if offset is None:
            raise ValueError("target mode 'top' needs a rank")
        # The true class sorts last; ties keep the lower class first (a stable sort).
        masked = clean_logits.scatter(1, y[:, None], float("-inf"))
        order = masked.sort(dim=1, descending=True, stable=True).indices
        return order[:, offset]
    if mode == "next":
        return (y + 1) % num_classes
    if mode == "all":
        if offset is None:
            raise ValueError("target mode 'all' needs an offset")
        return (y + offset) % num_classes
    if mode == "random":
        if draws is None:
            raise ValueError("target mode 'random' needs draws")
        shift = 1 + (draws * (num_classes - 1)).long().clamp_(max=num_classes - 2)
        return (y + shift) % num_classes
    masked = clean_logits.scatter(1, y[:, None], float("inf"))
    return masked.argmin(dim=1)


def _step_sizes(
    eps: Tensor, num_steps: int, rel_step_size: float | None, abs_step_size: float | None
) -> Tensor:
    if abs_step_size is not None:
        return torch.full_like(eps, abs_step_size)
    rel = 2.5 / num_steps if rel_step_size is None else rel_step_size
    return eps * rel


def step_fraction(
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    epsilons: Sequence[float] = (),
) -> float | None:
    """The largest step as a multiple of epsilon, or None where it is not known.

    A fixed step (``abs_step_size``) is a multiple of each epsilon; the largest is at the
    smallest positive one of ``epsilons`` (unknown without them).
    """
    if abs_step_size is None:
        return 2.5 / num_steps if rel_step_size is None else rel_step_size
    positive = [eps for eps in epsilons if eps > 0]
    return abs_step_size / min(positive) if positive else None


def _check_settings(
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    num_restarts: int,
    keep: str,
) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if num_restarts < 1:
        raise ValueError(f"num_restarts must be at least 1, got {num_restarts}")
    if rel_step_size is not None and abs_step_size is not None:
        raise ValueError(
            "give rel_step_size or abs_step_size, not both; got "
            f"rel_step_size={rel_step_size}, abs_step_size={abs_step_size}"
        )
    for name, value in (("rel_step_size", rel_step_size), ("abs_step_size", abs_step_size)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")


def _pgd(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str,
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    random_start: bool,
    num_restarts: int,
    loss: str,
    keep: Keep,
    early_stop: bool,
    nested: bool,
    bounds: Bounds | Sequence[float],
    batch_size: int | None,
    stochastic: bool,
    eot_samples: int,
    backend: str,
    generator: torch.Generator | int | None,
    target_mode: str | None,
    num_target_classes: int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    _check_settings(num_steps, rel_step_size, abs_step_size, num_restarts, keep)
    targeted = target_mode is not None
    if targeted and target_mode not in TARGET_MODES:
        raise ValueError(
            f"target_mode must be one of {', '.join(TARGET_MODES)}, got {target_mode!r}"
        )
    objective(loss, targeted=targeted)
    backends.check(backend)
    if num_target_classes is not None:
        if target_mode != "top":
            raise ValueError(
                "num_target_classes applies to target_mode 'top' only, got target_mode "
                f"{target_mode!r}; drop num_target_classes or use target_mode='top'"
            )
        if isinstance(num_target_classes, bool) or not isinstance(num_target_classes, int):
            raise TypeError(
                f"num_target_classes must be an int, got {type(num_target_classes).__name__}"
            )
        if num_target_classes < 1:
            raise ValueError(f"num_target_classes must be at least 1, got {num_target_classes}")
    call = prepare(
        model, x, y, epsilons, (norm, bounds), (generator, sample_ids), eot_samples=eot_samples
    )
    config = call.config
    backends.check_settings(
        backend,
        loss=loss,
        eot_samples=eot_samples,
        target_mode=target_mode,
        step_fraction=step_fraction(num_steps, rel_step_size, abs_step_size, config.epsilons),
    )
    params = {
        "num_steps": num_steps,
        "rel_step_size": rel_step_size,
        "abs_step_size": abs_step_size,
        "random_start": random_start,
        "num_restarts": num_restarts,
        "loss": loss,
        "keep": keep,
        "early_stop": early_stop,
        "nested": nested,
        "eot_samples": eot_samples,
        "stochastic": stochastic,
        "target_mode": target_mode,
    }
    if target_mode == "top":
        params["num_target_classes"] = num_target_classes

    def targets_for(batch: Batch, offset: int | None) -> Tensor | None:
        if target_mode is None:
            return None
        draws = None
        if target_mode == "random":
            # From the sample's own target stream: the same target at every epsilon.
            sources = config.streams(batch.index, TARGET_STREAM)
            draws = uniform((batch.index.numel(),), batch.x0, sources)
        return _targets_for(target_mode, offset, batch.y, batch.clean_logits, draws)

    def attack(batch: Batch) -> BatchResult:
        step = _step_sizes(batch.eps, num_steps, rel_step_size, abs_step_size)
        num_classes = batch.clean_logits.shape[1]
        offsets: list[int | None] = [None]
        if target_mode == "all":
            offsets = list(range(1, num_classes))
        elif target_mode == "top":
            offsets = list(range(min(num_target_classes or num_classes, num_classes - 1)))
        if backend != "native":
            return backends.pgd_batch(
                backend,
                config,
                batch,
                step,
                targets_for(batch, offsets[0]),
                num_steps=num_steps,
                random_start=random_start,
                num_restarts=num_restarts,
            )
        run = Descent(
            evaluator=config.evaluator,
            geometry=geometry(config.norm),
            bounds=config.bounds,
            objective=objective(loss, targeted=targeted, num_classes=num_classes),
            num_steps=num_steps,
            random_start=random_start,
            keep=keep,
            early_stop=early_stop,
            # Mode "top" counts a misclassification as done (AutoAttack's APGD-T plan): what
            # robust accuracy counts, and the next target runs only where all earlier failed.
            stop_rank=TARGETED_STOP if targeted and target_mode != "top" else UNTARGETED_STOP,
        )
        streams = config.streams(batch.index, epsilon_stream(batch.k)) if random_start else []
        state = State.empty(batch.x0, num_classes, num_steps)
        everyone = torch.arange(batch.x0.shape[0], device=batch.x0.device)
        first = True
        for offset in offsets:
            targets = targets_for(batch, offset)
            for _ in range(num_restarts):
                todo = everyone[state.best_rank < run.stop_rank]
                if todo.numel() == 0:
                    break
                descend(
                    run,
                    state,
                    todo,
                    batch.x0[todo],
                    batch.y[todo],
                    batch.eps[todo],
                    step[todo],
                    None if targets is None else targets[todo],
                    first_run=first,
                    streams=streams,
                )
                first = False
        return BatchResult(
            adversarial=state.best_x,
            logits=state.best_logits,
            last_success=state.last_rank >= 1,
            loss_trace=state.trace,
            queries=state.queries,
            first_grad_norm=state.first_grad_norm,
            targets=state.best_target if targeted else None,
            success_step=state.first_step,
        )

    return call.run(
        name,
        attack,
        engine=(nested, batch_size, stochastic),
        trace_length=num_steps + 1 if backend == "native" else 1,
        objective=describe(loss, targeted=targeted),
        params=params,
        backend=backend,
        targeted=targeted,
        gradients=backend == "native",
    )


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    num_steps: int = 100,
    rel_step_size: float | None = None,
    abs_step_size: float | None = None,
    random_start: bool = True,
    num_restarts: int = 1,
    loss: str = "ce",
    keep: Keep = "best",
    early_stop: bool = True,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    eot_samples: int = 1,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Untargeted PGD against the true labels (Madry et al.), one call for many epsilons.

    Args:
        model: maps inputs ``[N, ...]`` in ``bounds`` to logits ``[N, C]``.
        x: clean inputs ``[N, ...]`` in ``bounds``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii in input space (a single
            number gives one row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        num_steps: gradient steps per restart.
        rel_step_size: step as a fraction of epsilon (default ``2.5 / num_steps``).
        abs_step_size: a fixed step instead, the same at every epsilon.
        random_start: start from a uniform point of the ball instead of the clean input.
        num_restarts: further runs, each on the samples no run has fooled yet.
        loss: ``"ce"``, ``"cw"`` (margin) or ``"dlr"``.
        keep: ``"best"`` returns the first fooling iterate (else the highest objective);
            ``"last"`` returns the final iterate, as Madry et al. and the reference libraries.
        early_stop: stop attacking a sample once an iterate fools the model; turn it off to
            observe the final iterate of every sample (``last_success``).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: the input box ``(lower, upper)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        eot_samples: forward passes averaged per gradient (EOT) for stochastic models.
        backend: ``"native"``, ``"cleverhans"`` or ``"torchattacks"``.
        generator: a ``torch.Generator`` or an int seed (default seed 0); the native backend
            draws one seed from it and each sample's random starts from that sample's own
            stream, the libraries draw per batch from torch's global RNG seeded from it.
        sample_ids: int64 ``[N]``, distinct: the samples' identities in the whole evaluation
            set (default ``arange(N)``). With the native backend a sample's random draws
            depend on its id and the generator only, so its result does not depend on the
            batch, the batch size or the other samples (for a deterministic model).

    Returns:
        ``AttackResult`` with ``K = len(epsilons)`` and ``T = num_steps``.

    Example:
        >>> result = pgd(model, x, y, [0.1, 0.3], norm="linf", num_steps=40)
        >>> result.robust_accuracy  # one value per epsilon
    """
    # Every argument as given: PGD is PGD-T without a target.
    return _pgd("pgd-" + loss, **locals(), target_mode=None)


def pgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    target_mode: str = "random",
    num_target_classes: int | None = None,
    norm: Norm | str = Norm.LINF,
    num_steps: int = 100,
    rel_step_size: float | None = None,
    abs_step_size: float | None = None,
    random_start: bool = True,
    num_restarts: int = 1,
    loss: str = "ce",
    keep: Keep = "best",
    early_stop: bool = True,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    eot_samples: int = 1,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Targeted PGD (PGD-T): minimise the loss of a target class, never the true one.

    ``success`` is misclassification (what robust accuracy counts); ``target_success`` says
    whether the prediction is the target, and ``targets`` which target the example belongs to.
    An iterate that reaches its target beats one that is only misclassified.

    Args:
        target_mode: ``"random"`` (a uniform wrong class per sample, drawn from its own
            stream, the same at every epsilon), ``"next"`` (``(y + 1) mod C``),
            ``"least-likely"`` (lowest clean logit among the wrong classes), ``"all"`` (every
            wrong class in turn, each on the samples no earlier target reached) or ``"top"``
            (the ``num_target_classes`` most likely wrong classes by clean logit, most likely
            first, each on the samples that no earlier target misclassified: AutoAttack's
            APGD-T plan; a sample stops as soon as it is misclassified). A reference backend
            runs only the first target.
        num_target_classes: for ``"top"``, how many targets (default all ``C - 1``; fewer
            when the model has fewer wrong classes).
        Other arguments: as for ``pgd``; ``early_stop`` stops a sample once it reaches its
            target (in mode ``"top"``, once it is misclassified).

    Returns:
        ``AttackResult`` with ``targets`` and ``target_success`` set.
    """
    return _pgd("pgd-t", **locals())

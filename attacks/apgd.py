"""APGD-CE, APGD-T and standard AutoAttack through pyautoattack, for a thorough suite.

These are the AutoAttack authors' implementations, called per epsilon on the samples still
correctly classified. Their examples are judged here like every other attack's. pyautoattack
seeds torch's global RNG itself; it runs under a forked RNG seeded from the explicit
generator, so the caller's global state is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks._engine import Batch, BatchOutcome, run_attack, setup
from attacks._model import CountingModule, library_gradients
from attacks.losses import fooled, judged_margin
from attacks.result import AttackResult
from attacks.square import check_unit_box
from attacks.threat import Bounds, Norm
from torchutil import draw_seed, forked_global_rng, torch_default_device

APGD_LOSSES = ("ce", "dlr")


def _pyautoattack_norm(norm: Norm) -> str:
    return "Linf" if norm is Norm.LINF else "L2"


def _outcome(batch: Batch, adversarial: Tensor, logits: Tensor) -> BatchOutcome:
    return BatchOutcome(
        adversarial=adversarial,
        logits=logits,
        last_success=fooled(logits, batch.y),
        loss_trace=(-judged_margin(logits, batch.y)).unsqueeze(0),
        queries=torch.zeros_like(batch.y),
    )


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm | str = Norm.LINF,
    loss: str = "ce",
    targeted: bool = False,
    num_steps: int = 100,
    num_restarts: int = 1,
    num_target_classes: int = 9,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """APGD (Croce and Hein, 2020): untargeted on CE or DLR, or targeted on DLR (APGD-T).

    Args:
        model: maps inputs ``[N, ...]`` in ``[0, 1]`` to logits ``[N, C]``; float32.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: ascending, non-negative radii.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"dlr"`` (untargeted); APGD-T always uses targeted DLR.
        targeted: run APGD-T over the ``num_target_classes`` most likely wrong classes.
        num_steps: iterations per run.
        num_restarts: runs (per target for APGD-T).
        num_target_classes: targets tried by APGD-T (at most ``C - 1``).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: must be ``(0, 1)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0).
        sample_ids: int64 ``[N]``, distinct: the samples' identities (default ``arange(N)``);
            checked, but pyautoattack draws per batch from torch's global RNG, so a sample's
            result depends on its batch (``registry.batch_independent`` is False).

    Returns:
        ``AttackResult`` with ``T = 0`` (the final margin loss only); ``success_step`` is
        ``STEP_UNKNOWN`` (-2) for every broken sample, as pyautoattack returns only the
        examples.
    """
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    if loss not in APGD_LOSSES:
        raise ValueError(f"APGD loss must be one of {', '.join(APGD_LOSSES)}, got {loss!r}")
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
    check_unit_box("APGD", config.bounds)

    def attack(batch: Batch) -> BatchOutcome:
        wrapper = CountingModule(config.evaluator)
        seed = draw_seed(config.generator, bound=2**31)
        common = {
            "n_iter": num_steps,
            "norm": _pyautoattack_norm(config.norm),
            "eps": float(batch.eps[0]),
            "n_restarts": num_restarts,
            "seed": seed,
            "device": x.device,
        }
        if targeted:
            classes = min(num_target_classes, batch.clean_logits.shape[1] - 1)
            runner = APGDAttack_targeted(wrapper, n_target_classes=classes, **common)
        else:
            runner = APGDAttack(wrapper, loss=loss, **common)
        with (
            forked_global_rng(x.device),
            library_gradients(config.evaluator.model, batch.x0),
            # pyautoattack creates tensors on the default device and then moves them
            # (``torch.randn(x.shape).to(self.device)``): it runs with torch's own default.
            torch_default_device(),
        ):
            adversarial = runner.perturb(batch.x0, batch.y).detach().to(x.dtype)
        return _outcome(batch, adversarial, config.evaluator.logits(adversarial))

    name = "apgd-t" if targeted else f"apgd-{loss}"
    return run_attack(
        name,
        model,
        x,
        y,
        config,
        attack,
        trace_length=1,
        objective="cw",
        nested=nested,
        batch_size=batch_size,
        stochastic=stochastic,
        params={
            "loss": "dlr" if targeted else loss,
            "targeted": targeted,
            "num_steps": num_steps,
            "num_restarts": num_restarts,
            "num_target_classes": num_target_classes,
            "nested": nested,
        },
        backend="pyautoattack",
        gradients=False,
    )


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm | str = Norm.LINF,
    version: str = "standard",
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at each epsilon.

    Args:
        version: pyautoattack's version, ``"standard"`` (or ``"plus"``, ``"rand"``).
        Other arguments: as for ``apgd``.

    Returns:
        ``AttackResult`` with ``T = 0`` and ``success_step`` unknown (-2) where broken.
    """
    from pyautoattack import AutoAttack

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
    check_unit_box("AutoAttack", config.bounds)

    def attack(batch: Batch) -> BatchOutcome:
        wrapper = CountingModule(config.evaluator)
        seed = draw_seed(config.generator, bound=2**31)
        runner = AutoAttack(
            wrapper,
            norm=_pyautoattack_norm(config.norm),  # type: ignore[arg-type]
            eps=float(batch.eps[0]),
            seed=seed,
            version=version,  # type: ignore[arg-type]
            device=x.device,
        )
        runner.logger.setLevel(logging.WARNING)
        with (
            forked_global_rng(x.device),
            library_gradients(config.evaluator.model, batch.x0),
            torch_default_device(),  # as in apgd: pyautoattack relies on torch's default
        ):
            found, _ = runner.run_standard_evaluation(batch.x0, batch.y, batch_size=batch.y.numel())
        adversarial = found.detach().to(x.dtype)
        return _outcome(batch, adversarial, config.evaluator.logits(adversarial))

    return run_attack(
        "autoattack",
        model,
        x,
        y,
        config,
        attack,
        trace_length=1,
        objective="cw",
        nested=nested,
        batch_size=batch_size,
        stochastic=stochastic,
        params={"version": version, "nested": nested},
        backend="pyautoattack",
        gradients=False,
    )
